// The official TypeScript client with LM Studio's apiToken, against the lmhost at argv[2]
// (wss://host:port, through nginx). argv[3..5]: an admin token, an inference token, a token
// the server does not know. Prints one JSON object with what it saw; test_production.py checks it.
import { LMStudioClient } from "@lmstudio/sdk";
import { failure } from "./support.mjs";

const [baseUrl, adminToken, inferenceToken, unknownToken] = process.argv.slice(2);
const connect = (apiToken) => new LMStudioClient({ baseUrl, apiToken, verboseErrorMessages: false });
const seen = {};

// no token, or one the server does not know: the socket's authentication fails
seen.noToken = await failure(() => new LMStudioClient({ baseUrl, verboseErrorMessages: false }).llm.listLoaded());
seen.unknownToken = await failure(() => connect(unknownToken).llm.listLoaded());

// inference: listing and get-or-load (the JIT path) yes, explicit load and unload no
const user = connect(inferenceToken);
seen.inferenceListed = (await user.llm.listLoaded()).length;
seen.inferenceLoad = await failure(() => user.llm.load("tiny-moe", { verbose: false }));
const jit = await user.llm.model("tiny-llama", { verbose: false });
seen.inferenceGetOrLoad = jit.identifier;
seen.inferenceUnload = await failure(() => user.llm.unload(jit.identifier));

// admin: load and unload
const admin = connect(adminToken);
const loaded = await admin.llm.load("tiny-moe", { identifier: "ts-admin", verbose: false });
seen.adminLoaded = loaded.identifier;
seen.listed = (await admin.llm.listLoaded()).map((m) => m.identifier).sort();
await admin.llm.unload("ts-admin");
await admin.llm.unload(jit.identifier);
seen.afterUnload = (await admin.llm.listLoaded()).map((m) => m.identifier);
console.log(JSON.stringify(seen));
process.exit(0);
