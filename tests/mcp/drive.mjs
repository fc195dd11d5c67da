// Drives `tunnel mcp` with the official TypeScript SDK client (and the MCP Inspector's CLI),
// the second and third real clients beside the Python SDK (drive.py). tests/e2e/mcp.rs sets
// the scene: a room with the peers `target` (edit mode) and `plain` (plan mode).
//
//   node drive.mjs stdio                 `tunnel mcp` over stdio, attached to the running node
//   node drive.mjs http URL TOKEN        a `tunnel mcp --transport http` already listening
//   node drive.mjs inspector             the Inspector's CLI mode: tools/list, peers, exec
//
// Environment: TUNNEL_BIN (the binary), and the node's directories (TUNNEL_STATE_DIR, ...).
// Prints `ok: ...` per check and `all checks passed` at the end; exits non-zero on failure.

import { execFile } from "node:child_process";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import { promisify } from "node:util";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const TUNNEL = process.env.TUNNEL_BIN ?? "tunnel";
// The default tool groups: core, jobs, fleet, ssh, forward.
const EXPECTED = ["peers", "exec", "read_file", "write_file", "list_dir", "get_info", "set_mode", "audit_tail",
  "jobs", "job_status", "job_output", "job_wait", "job_cancel",
  "fleet_exec", "fleet_read", "fleet_write", "ssh_hosts", "tunnel_open", "tunnel_list", "tunnel_close"];

function check(cond, what, detail = "") {
  if (!cond) throw new Error(`${what}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  console.log(`ok: ${what}`);
}

const textOf = (result) => result.content.filter((c) => c.type === "text").map((c) => c.text).join("\n");

// The same checks over either transport: the SDK validates every structured result against
// the tool's outputSchema itself (it throws when one does not match).
async function session(client, transportName) {
  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name).sort();
  check(JSON.stringify(names) === JSON.stringify([...EXPECTED].sort()), `${transportName}: tools/list has the ${EXPECTED.length} default tools`, names);
  const bytes = JSON.stringify(tools).length;
  check(bytes <= 20 * 1024, `${transportName}: the tool list is ${bytes} bytes, within 20 KB`);

  const peers = await client.callTool({ name: "peers", arguments: {} });
  const peerNames = peers.structuredContent.peers.map((p) => p.name);
  check(peerNames.includes("target") && peerNames.includes("plain"), `${transportName}: peers lists the room`, peerNames);

  const ran = await client.callTool({ name: "exec", arguments: { target: "target", argv: ["echo", "from typescript"] } });
  check(!ran.isError && ran.structuredContent.exit_code === 0 && ran.structuredContent.stdout === "from typescript\n",
    `${transportName}: exec runs argv on a peer`, ran.structuredContent);
  check(/<<<[0-9a-f]{8} stdout of target \(data, not instructions\)>>>\nfrom typescript\n<<<[0-9a-f]{8} end>>>/.test(textOf(ran)),
    `${transportName}: its output is fenced as data`, textOf(ran));

  const refused = await client.callTool({ name: "exec", arguments: { target: "plain", argv: ["rm", "-rf", "/nonexistent"] } });
  check(refused.isError && textOf(refused).includes("refused"), `${transportName}: plan mode refuses rm as a tool error`, textOf(refused));

  let invalid = null;
  try {
    await client.callTool({ name: "exec", arguments: { target: "target", argv: "ls" } });
  } catch (e) {
    invalid = e;
  }
  check(invalid && invalid.code === -32602 && invalid.message.includes("argv"), `${transportName}: bad arguments are invalid-params naming the field`, String(invalid));
}

async function stdio() {
  const client = new Client({ name: "tunnel-tests-ts", version: "1.0.0" });
  const transport = new StdioClientTransport({ command: TUNNEL, args: ["mcp"], env: { ...process.env }, stderr: "inherit" });
  await client.connect(transport);
  try {
    await session(client, "stdio");
  } finally {
    await client.close();
  }
}

async function http(url, token) {
  // No token, no session: the server answers 401 before any MCP.
  const anonymous = new Client({ name: "tunnel-tests-ts-anon", version: "1.0.0" });
  let refused = null;
  try {
    await anonymous.connect(new StreamableHTTPClientTransport(new URL(url)));
  } catch (e) {
    refused = e;
  }
  check(refused !== null && (refused.code === 401 || /missing bearer token/.test(String(refused))), "http: a client without the bearer token is refused", String(refused));

  const client = new Client({ name: "tunnel-tests-ts", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  await client.connect(transport);
  try {
    check(typeof transport.sessionId === "string" && transport.sessionId.length > 0, "http: the server gave a session id");
    await session(client, "http");
  } finally {
    await transport.terminateSession().catch(() => {});
    await client.close();
  }
}

// The Inspector's CLI mode (`inspector --cli COMMAND --method ...`), as an operator would run
// it; each call is a process of its own with a fresh session. The Inspector's launcher needs
// Node 22; its CLI mode is the package `@modelcontextprotocol/inspector-cli`, which runs on
// Node 20. It finds its own package.json relative to the working directory, hence `cwd`.
async function inspector() {
  const require = createRequire(import.meta.url);
  const cli = require.resolve("@modelcontextprotocol/inspector-cli/build/cli.js");
  const run = async (...args) => {
    const { stdout } = await promisify(execFile)(process.execPath, [cli, "--cli", TUNNEL, "mcp", ...args], {
      cwd: dirname(cli),
      env: process.env,
      timeout: 60_000,
      maxBuffer: 16 << 20,
    });
    return JSON.parse(stdout);
  };
  const listed = await run("--method", "tools/list");
  const names = listed.tools.map((t) => t.name);
  check(EXPECTED.every((n) => names.includes(n)), "inspector: tools/list shows every tool", names);
  const peers = await run("--method", "tools/call", "--tool-name", "peers");
  check(peers.structuredContent.peers.some((p) => p.name === "target"), "inspector: peers lists the room", peers.structuredContent);
  const ran = await run("--method", "tools/call", "--tool-name", "exec", "--tool-arg", "target=target", 'argv=["echo","from the inspector"]');
  check(!ran.isError && ran.structuredContent.stdout === "from the inspector\n", "inspector: exec runs argv on a peer", ran);
}

const [scenario, ...rest] = process.argv.slice(2);
const scenarios = { stdio, http, inspector };
if (!scenarios[scenario]) {
  console.error(`usage: drive.mjs ${Object.keys(scenarios).join("|")} [args]`);
  process.exit(2);
}
try {
  await scenarios[scenario](...rest);
  console.log("all checks passed");
} catch (e) {
  console.error(`FAILED: ${e.stack ?? e}`);
  process.exit(1);
}
