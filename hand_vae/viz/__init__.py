"""Pictures of a hand pose prior: figure functions (no Lightning) and the plot callback (``viz.callback``)."""
