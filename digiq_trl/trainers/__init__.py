"""Trainers: one ``<name>_config.py`` + ``<name>_trainer.py`` pair per stage."""
