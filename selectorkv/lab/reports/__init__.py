"""The reports: Markdown and plots computed from a study's saved data, so a
report can be drawn again without running anything (plots.py, node_report.py,
cluster_report.py, calibration_report.py)."""
