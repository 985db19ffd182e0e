"""Analysis of a built zoo: the paper's tables and figures (``zoo-report``) and a
hyper-representation reference (``zoo-hyperrep``). Reads stores only through ``ZooStore``."""
