"""The model-based data audit: label issues, outliers, near-duplicates and weak slices, reviewed in Label Studio.

The findings' format (where they live, their table) is :mod:`flotilla.data.findings`, so that the
data report can read them without this package. docs/data.md tells the audit and its review loop.
"""

__all__: list[str] = []
