"""Importers of real-world face dataset formats into :class:`~flotilla.data.layout.Sample` s.

``import_source(kind, path, labels_csv=None)`` dispatches to one of ``KINDS``:
``"utkface"`` (:func:`import_utkface`), ``"fer2013"`` (:func:`import_fer2013`),
``"folder"`` (:func:`import_folder`, a folder plus a labels CSV). Contract:

* Image bytes are passed on **as found** (FER pixel rows become 48x48 grey PNGs).
  ``format`` comes from the magic bytes (:func:`detect_format`); unknown bytes
  give ``"unknown"`` and the sample is *kept*, for the validation gate to report.
* Labels use flotilla's vocabularies (gender 0=female 1=male, emotion = index
  into ``layout.EMOTIONS``). A missing label is ``None``, never 0. Labels a format has
  beyond the face three are kept (``Sample.labels``) and declared in ``ImportResult.schema``
  (UTKFace's race as ``ethnicity``, FER2013's Usage as ``usage``), which the manifest records.
* No range checks, no decoding: a value that parses (age 200, gender 5, emotion
  9) is passed through unchanged for the gate to report. Entries that cannot be
  parsed at all (broken file name, a CSV row with 17 pixels, a missing file, a
  path escaping the folder, lexically or through a symlink, a duplicate sample id) become :class:`ImportProblem`
  s on :attr:`ImportResult.problems` and never crash the import.
* Errors that make the whole input unusable (missing path, wrong CSV header,
  unknown column) raise :class:`ImportFormatError` when the importer is called;
  a CSV whose structure breaks further down (a parse error, a stray quote running
  over several lines, a row with the wrong number of fields) raises it while the
  samples are read, naming the file and line, so no partial dataset is ingested.

One module per format (``utkface``, ``fer2013``, ``folder``), over what they share: the result and its problems
(``result``), safe file and CSV reading (``files``) and the label vocabularies (``labels``).
"""

from flotilla.data.importers.dispatch import IMPORTERS, KINDS, Kind, import_source
from flotilla.data.importers.fer2013 import FER2013_SCHEMA, FER_HEADER, FER_SIDE, FER_USAGES, fer_pixels_to_png, import_fer2013
from flotilla.data.importers.folder import FOLDER_COLUMNS, import_folder
from flotilla.data.importers.labels import FER_USAGE, GENDER_NAMES, SPLIT_ALIASES, parse_label
from flotilla.data.importers.result import ImportFormatError, ImportProblem, ImportResult, detect_format
from flotilla.data.importers.utkface import ETHNICITIES, UTKFACE_SCHEMA, import_utkface, parse_utkface_name

__all__ = [
    "ETHNICITIES",
    "FER2013_SCHEMA",
    "FER_HEADER",
    "FER_SIDE",
    "FER_USAGE",
    "FER_USAGES",
    "FOLDER_COLUMNS",
    "GENDER_NAMES",
    "IMPORTERS",
    "KINDS",
    "SPLIT_ALIASES",
    "UTKFACE_SCHEMA",
    "ImportFormatError",
    "ImportProblem",
    "ImportResult",
    "Kind",
    "detect_format",
    "fer_pixels_to_png",
    "import_fer2013",
    "import_folder",
    "import_source",
    "import_utkface",
    "parse_label",
    "parse_utkface_name",
]
