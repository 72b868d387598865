"""clctl: the cloudland command-line tool, a client of the REST API (it imports no server code).

The entry point is :func:`clctl.main.cli`.

Keep this file free of anything ``clctl.main`` needs: an editable install made while this
directory was empty maps ``clctl`` as a namespace package, and then this file never runs.
"""
