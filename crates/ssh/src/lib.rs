//! The agentless arm (SSH inventory, client pool, known_hosts). Arrives with the SSH issue.
