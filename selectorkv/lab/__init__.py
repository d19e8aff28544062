"""The performance lab: load generation (and, later, the study that uses it).

Needs the ``lab`` extra (``pip install 'selectorkv[lab]'``); the server does
not import anything from here.
"""
