"""Kept only for the ANN modules' ``MARGIN`` import; rescoring lives in ``scoring``."""

from distilmarco.index.scoring import MARGIN as MARGIN
