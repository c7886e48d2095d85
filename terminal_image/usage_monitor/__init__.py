"""The task's usage monitor: observes whether the terminal is used and reports it to the control plane."""
