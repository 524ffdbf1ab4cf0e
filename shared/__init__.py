"""Contracts that the edge and the executor both import.

Pure Python and safe in Pyodide: no threads, no sockets, no heavy imports.
"""
