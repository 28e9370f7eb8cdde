"""
The reliability suite: crashes, faults and hostile peers, each run with
counts that docs/reliability.md reports.
"""
