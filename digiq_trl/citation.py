"""The Digi-Q paper's BibTeX, cited by every model and dataset card the library writes."""

DIGIQ_CITATION = """@inproceedings{bai2025digiq,
  title         = {Digi-Q: Learning Q-Value Functions for Training Device-Control Agents},
  author        = {Bai, Hao and Zhou, Yifei and Li, Li Erran and Levine, Sergey and Kumar, Aviral},
  booktitle     = {International Conference on Learning Representations (ICLR)},
  year          = {2025},
  eprint        = {2502.15760},
  archivePrefix = {arXiv}
}"""
"""BibTeX of the Digi-Q paper."""
