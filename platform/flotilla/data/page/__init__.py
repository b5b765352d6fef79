"""Looking at a dataset: a self-contained HTML report (:func:`data_report`) and a PNG grid (:func:`data_grid`)."""

from flotilla.data.page.build import data_grid, data_report
from flotilla.data.page.columns import ReportColumn, columns_of
from flotilla.data.page.thumbs import GridLayout

__all__ = ["GridLayout", "ReportColumn", "columns_of", "data_grid", "data_report"]
