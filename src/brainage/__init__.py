"""Brain-age prediction from IXI-like MRI: the science behind the Snakemake workflow.

Each pipeline stage is one module of plain, typed functions; the workflow's rules are thin
wrappers that call them, and the tests import them directly.
"""

__version__ = "0.1.0"
