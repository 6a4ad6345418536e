"""Starting, stopping and watching the platform's real components on one machine."""
