"""Builders: the ``zoo-build`` command and the stages that write a store."""
