"""Connectors to data sources and agent frameworks (MCP, LangChain, tool schemas).

Shipped in the `hybridctx` distribution under its own import name so that the core
package never imports a framework. Each adapter's dependency lives in an extra and is
imported lazily. Plain files and folders are read by the core (`hybridctx.sources`).
"""
