//! The MCP server that maps tools onto the node API. Arrives with the MCP issue.
