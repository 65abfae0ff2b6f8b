"""Briefing: the service (service/, review/, web/) and the `briefing` command line (cli)."""
