"""Evaluation: IR test collections (BEIR, MS MARCO/TREC, SMART) scored with trec_eval, STS,
classification (MTEB protocol), clustering, backend x precision comparisons, plots, and the
reproduction of the published MS MARCO figures. Modules are imported on use; nothing heavy here."""
