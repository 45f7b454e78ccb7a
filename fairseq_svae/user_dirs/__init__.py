"""Directories for fairseq's ``--user-dir`` that bring in other fairseq plugins together with this
one. ``--user-dir`` takes a single directory, and fairseq 0.12 needs this plugin's weights-only
checkpoint loading (:mod:`fairseq_svae.checkpoint_io`) to read any checkpoint under torch >= 2.6:
each directory here imports :mod:`fairseq_svae` first, then the other plugin's registrations.
``svae-user-dir NAME`` prints the path of directory ``NAME``."""
