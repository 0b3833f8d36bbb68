"""Reporting: reading fairseq's logs of a run (runlogs, with the plugin's log keys in
logkeys), tables and their statistics, plots, findings.md, the sweep's and the T5 recipe's
reports, and making a results folder portable."""
