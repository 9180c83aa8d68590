"""The application: the agent service, the reference control plane, the CLI."""
