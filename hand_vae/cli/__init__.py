"""The command-line layer: each command parses its flags, calls into the package and prints a summary;
``common`` holds what they share. Nothing below imports from here."""
