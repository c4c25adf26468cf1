"""How the compendium runs, shared by every notebook: profiles (``config``), seeding (``seed``),
results files (``results``), the papermill pipeline (``pipeline``, ``steps``, ``layout``,
``staging``, ``runlock``, ``preflight``, ``diskspace``, ``cachecheck``), the paper's and the
README's generated inputs (``report``, ``readme_tables``), the re-execution check (``tolerance``) and
`make install` (``install``: standard library only, it runs before cag_utils is installed).
"""
