"""Offline evaluation: dataset loaders, protocols, runner and the `celrec eval` command."""
