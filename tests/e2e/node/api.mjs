// Model management through the official TypeScript client, against the lmhost at argv[2]
// (ws://host:port). Prints one JSON object with what it saw; tests/e2e/test_sdk_api.py checks it.
import { LMStudioClient } from "@lmstudio/sdk";
import { failure } from "./support.mjs";

const client = new LMStudioClient({ baseUrl: process.argv[2], verboseErrorMessages: false });
const seen = {};

const progress = [];
const llama = await client.llm.model("tiny-llama", { onProgress: (p) => progress.push(p), verbose: false });
seen.progress = progress;
const config = { contextLength: 512, evalBatchSize: 64, flashAttention: true, seed: 7,
                 offloadKVCacheToGpu: false, gpu: { ratio: 0.5 } };
const second = await client.llm.load("tiny-moe", { identifier: "ts-moe", config: { ...config, numExperts: 1 },
                                                    ttl: 600, verbose: false });
seen.second = { identifier: second.identifier, context: await second.getContextLength(),
                config: await second.getLoadConfig() };
// load(), not model(): a get-or-load (JIT) of it would auto-evict the JIT-loaded LLM
const embed = await client.embedding.load("tiny-embed", { verbose: false });
seen.embedInfo = await embed.getModelInfo();
seen.llmLoaded = (await client.llm.listLoaded()).map((m) => m.identifier).sort();
seen.embeddingLoaded = (await client.embedding.listLoaded()).map((m) => m.identifier);
seen.info = await llama.getModelInfo();
seen.any = (await client.llm.model()).identifier;
seen.downloaded = (await client.system.listDownloadedModels()).map((m) => [m.modelKey, m.type]).sort();
seen.errors = {
  notFound: await failure(() => client.llm.model("no-such-model", { verbose: false })),
  duplicate: await failure(() => client.llm.load("tiny-llama", { identifier: "ts-moe", verbose: false })),
  badConfig: await failure(() => client.llm.load("tiny-llama", { config: { contextLength: 999999 }, verbose: false })),
  wrongNamespace: await failure(() => client.llm.model("tiny-embed", { verbose: false })),
  unloadUnknown: await failure(() => client.llm.unload("no-such-instance")),
  files: await failure(() => client.files.prepareImageBase64("a.png", "aGVsbG8=")),
};
const predicted = await llama.respond("Hello", { maxTokens: 4 });
seen.predicted = { content: predicted.content, stats: predicted.stats };
seen.embedded = (await embed.embed("Hello")).embedding.length;
await client.llm.unload("ts-moe");
await embed.unload();
await llama.unload();
seen.afterUnload = (await client.llm.listLoaded()).length;
seen.noneLoaded = await failure(() => client.llm.model());
console.log(JSON.stringify(seen));
