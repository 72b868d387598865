"""clctl: the cloudland command-line tool.

Until the REST API exists it talks to the frontend through the frontend's local control
socket (see :mod:`frontend.control`).  The entry point is :func:`clctl.main.cli`.

Keep this file free of anything ``clctl.main`` needs: an editable install made while this
directory was empty maps ``clctl`` as a namespace package, and then this file never runs.
"""
