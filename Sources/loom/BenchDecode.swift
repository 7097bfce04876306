import ArgumentParser
import CUDABackend
import Foundation
import LoomCore
import LoRA
import ModelFormats
import Models

/// `loom bench …`: device benchmarks.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Benchmarks on the GPU.", subcommands: [BenchDecode.self, BenchLoRAKernels.self, BenchServe.self, MakeAdapters.self])
}

/// `loom bench decode`: offline decode throughput on the GPU, each figure beside its floor
/// (bytes read per step over the HBM bandwidth measured at start with a device-to-device copy).
/// With `--adapters N`, sequence s runs adapter s mod N (synthetic, rank `--rank`, all seven
/// projections), and the floor adds the bytes of the step's distinct adapters.
struct BenchDecode: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "decode", abstract: "Decode throughput on the GPU against the memory-bandwidth floor.")

    @Option(help: "A Hugging Face model folder.")
    var modelPath: String?

    @Option(help: "Random bf16 weights of a named shape, made on the device: \(RandomModel.shapeNames.joined(separator: ", ")).")
    var randomWeights: String?

    @Option(help: "Batch sizes, comma-separated.")
    var batch = "1,32"

    @Option(help: "Prompt tokens per sequence.")
    var promptLen = 128

    @Option(help: "New tokens per sequence.")
    var newTokens = 128

    @Flag(help: "Also run every batch without CUDA graphs.")
    var eagerToo = false

    @Flag(help: "Run without CUDA graphs only.")
    var eagerOnly = false

    @Option(help: "Tensor-parallel ranks: GPUs 0 ..< N joined by NCCL.")
    var tpSize = 1

    @Option(help: "Synthetic adapters (all seven projections); sequence s uses adapter s mod N. 0: no LoRA.")
    var adapters = 0

    @Option(help: "Rank of the synthetic adapters.")
    var rank = 16

    @Option(help: "LoRA kernels: csgmv (chunked segments), sgmv, triton (an alias of sgmv), or fused (expand inside the base GEMM).")
    var loraBackend = "csgmv"

    @Option(help: "Most tokens per segment with --lora-backend csgmv.")
    var maxLoraChunkSize = 16

    @Option(help: "With --lora-backend fused: the most rows of a step whose deltas the ops reading the GEMMs add (0: the widened K for every step).")
    var fusedDecodeRows = LoRAOptions().fusedDecodeRows

    @Option(help: "With --lora-backend fused: the largest pool rank whose decode steps add the deltas in the ops reading the GEMMs (at most \(LoRAManager.maxConsumerRank)).")
    var fusedConsumerMaxRank = LoRAOptions().fusedConsumerMaxRank

    @Flag(inversion: .prefixedNo, help: "Before timing each batch in graphs: try every cuBLASLt candidate of each GEMM shape in whole graph steps and keep the fastest (one GPU).")
    var tuneGemms = false

    @Flag(help: "Time each projection of layer 0 alone (cuBLASLt) at every batch size.")
    var profile = false

    @Option(help: "Also write the result object to this file.")
    var output: String?

    @Option(help: "The commit to record in the result.")
    var commit = ProcessInfo.processInfo.environment["LOOM_COMMIT"] ?? "unknown"

    mutating func validate() throws {
        if (modelPath == nil) == (randomWeights == nil) { throw ValidationError("give exactly one of --model-path and --random-weights") }
        if let r = randomWeights, ModelConfig.namedShapes[r.lowercased()] == nil {
            throw ValidationError("unknown shape '\(r)' (known: \(RandomModel.shapeNames.joined(separator: ", ")))")
        }
        // The first two decode steps warm up (and capture graphs) untimed: at least one more is timed.
        if promptLen < 1 || newTokens < 4 { throw ValidationError("--prompt-len ≥ 1 and --new-tokens ≥ 4 (two decode steps warm up untimed)") }
        if tpSize < 1 { throw ValidationError("--tp-size must be at least 1") }
        if tuneGemms && (tpSize > 1 || eagerOnly) {
            throw ValidationError("--tune-gemms times graph steps on one GPU: it needs --tp-size 1 and CUDA graphs (not --eager-only)")
        }
        if adapters < 0 { throw ValidationError("--adapters must be at least 0") }
        if !(0...LoRAManager.maxConsumerRank).contains(fusedConsumerMaxRank) {
            throw ValidationError("--fused-consumer-max-rank must be between 0 and \(LoRAManager.maxConsumerRank)")
        }
        if rank < 1 { throw ValidationError("--rank must be at least 1") }
        do {
            _ = try SyntheticAdapters.poolOptions(slots: max(adapters, 1), rank: rank, backend: loraBackend, chunkSize: maxLoraChunkSize)
        } catch let e as LoomError {
            throw ValidationError(e.description)
        }
    }

    func run() throws {
        let batches = batch.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !batches.isEmpty, batches.allSatisfy({ $0 > 0 }) else { throw ValidationError("--batch: give positive integers") }
        let gpus = try (0..<tpSize).map { try CUDABackend(device: $0) }
        let gpu = gpus[0]
        for g in gpus { g.recordsGraphSummaries = true }
        let communicators: [Communicator?] = tpSize == 1 ? [nil] : try NCCLCommunicator.group(backends: gpus)
        let ncclVersion = (communicators.first as? NCCLCommunicator)?.ncclVersion
        let bandwidth = try gpu.measureCopyBandwidth()
        benchLog(String(format: "%@: copy bandwidth %.0f GB/s (read + write)", gpu.deviceName, bandwidth / 1e9))
        let directory = try randomWeights.map(RandomModel.write) ?? modelPath!
        let modelName = randomWeights ?? (directory as NSString).lastPathComponent
        let maxBatch = batches.max()!
        let blockSize = 16
        let blocksPerSequence = (promptLen + newTokens + blockSize - 1) / blockSize
        let loadStart = Date()
        let load = {
            try LlamaModel(directory: directory, backends: gpus, communicators: communicators,
                           maxTokens: max(maxBatch, min(maxBatch * promptLen, 8192)),
                           maxSequences: maxBatch, maxBlocksPerSequence: blocksPerSequence, blockSize: blockSize)
        }
        let model = try randomWeights == nil ? load() : RandomModel.loading(on: gpus, load)
        benchLog(String(format: "loaded %@ in %.1f s (tp %d%@)", modelName, Date().timeIntervalSince(loadStart), tpSize,
                        ncclVersion.map { ", NCCL \($0)" } ?? ""))
        var lora: DecodeLoRA?
        if adapters > 0 {
            let loraStart = Date()
            lora = try DecodeLoRA.make(model: model, modelName: modelName, gpus: gpus, communicators: communicators, adapters: adapters,
                                       rank: rank, backend: loraBackend, chunkSize: maxLoraChunkSize, fusedDecodeRows: fusedDecodeRows,
                                       fusedConsumerMaxRank: fusedConsumerMaxRank)
            benchLog(String(format: "%d adapters of rank %d (%.1f MB each per step) resident in %.1f s", adapters, rank,
                            Double(lora!.bytesPerAdapter) / 1e6, Date().timeIntervalSince(loraStart)))
        }
        defer { lora?.removeFiles() }
        var rows: [[String: Any]] = []
        for b in batches {
            for graphs in eagerOnly ? [false] : eagerToo ? [true, false] : [true] {
                var row = try DecodeRun(model: model, gpus: gpus, batch: b, promptLength: promptLen, newTokens: newTokens,
                                        blockSize: blockSize, useGraphs: graphs, tunesGEMMs: tuneGemms, bandwidth: bandwidth, lora: lora).run()
                row["model"] = modelName
                row["tp_size"] = tpSize
                rows.append(row)
                benchLog("\(row)")
            }
            if profile && tpSize == 1 { rows.append(contentsOf: profileProjections(model: model, gpu: gpu, batch: b, bandwidth: bandwidth)) }
        }
        let formatter = ISO8601DateFormatter()
        var environment = gpu.environment
        if let ncclVersion { environment["nccl"] = ncclVersion }
        environment["gpus"] = gpus.map(\.deviceName).joined(separator: ", ")
        var result: [String: Any] = [
            "tp_size": tpSize, "bench": "decode", "command": CommandLine.arguments.joined(separator: " "), "commit": commit, "gpu": gpu.deviceName,
            "date": formatter.string(from: Date()), "hbm_copy_bandwidth_gb_s": bandwidth / 1e9, "environment": environment, "rows": rows,
        ]
        if tuneGemms { result["gemm_tunings"] = gpu.gemmTunings }
        let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys, .prettyPrinted])
        if let output { try data.write(to: URL(fileURLWithPath: output)) }
        print(String(decoding: data, as: UTF8.self))
    }

    /// Each projection of layer 0 (and the LM head) alone, through cuBLASLt, against its own floor.
    func profileProjections(model: LlamaModel, gpu: CUDABackend, batch: Int, bandwidth: Double) -> [[String: Any]] {
        let layer = model.weights.layers[0]
        var rows: [[String: Any]] = []
        for (name, w) in [("qkv", layer.qkv), ("o", layer.o), ("gate_up", layer.gateUp), ("down", layer.down), ("lm_head", model.weights.lmHead)] {
            let x = try! gpu.allocate(Shape(batch, w.shape[1]), dtype: .bf16)
            let out = try! gpu.allocate(Shape(batch, w.shape[0]), dtype: .bf16)
            gpu.fillRandom(x, seed: 7, standardDeviation: 1)
            for _ in 0..<3 { gpu.linear(x, weight: w, bias: nil, out: out) }
            let reps = 50
            let ms = gpu.timeMilliseconds { for _ in 0..<reps { gpu.linear(x, weight: w, bias: nil, out: out) } } / Double(reps)
            let bytes = Double(w.count * 2 + x.count * 2 + out.count * 2)
            rows.append(["profile": "linear", "projection": name, "batch": batch, "shape": w.shape.dims, "us": ms * 1000,
                         "floor_us": bytes / bandwidth * 1e6, "fraction_of_bandwidth": bytes / bandwidth / (ms / 1000)])
        }
        return rows
    }
}

func benchLog(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// One offline batch: `batch` random prompts prefilled in one step (or a few), then greedy decode
/// steps sampled on the device, so only token ids come back. The first two decode steps (eager, then
/// the graph capture, after the GEMM tuning when asked) are not timed.
struct DecodeRun {
    let model: LlamaModel
    /// One backend per rank; rank 0's runs the sampling and the timing.
    let gpus: [CUDABackend]
    var gpu: CUDABackend { gpus[0] }
    let batch: Int
    let promptLength: Int
    let newTokens: Int
    let blockSize: Int
    let useGraphs: Bool
    /// Whether cuBLASLt's algorithms are chosen in whole graph steps (`CUDABackend.tuneGEMMs`) before the timed steps.
    let tunesGEMMs: Bool
    let bandwidth: Double
    /// The adapters, or nil for a run without LoRA.
    let lora: DecodeLoRA?

    func run() throws -> [String: Any] {
        let c = model.config
        let blocksPerSequence = (promptLength + newTokens + blockSize - 1) / blockSize
        let cache = try KVCache(model: model, numBlocks: batch * blocksPerSequence, blockSize: blockSize)
        let tables = (0..<batch).map { s in (0..<blocksPerSequence).map { Int32(s * blocksPerSequence + $0) } }
        var rng = OpChecks.SplitMix(seed: UInt64(batch) &* 7919)
        let prompts = (0..<batch).map { _ in (0..<promptLength).map { _ in Int32(rng.int(c.vocabSize)) } }
        let ids = try gpu.allocate(Shape(batch), dtype: .i32)
        // Runs with and without adapters launch different kernels: they never share a graph.
        let graphKey = "decode-\(batch)-adapters-\(lora?.refs.count ?? 0)"

        // Prefill, as many whole prompts per step as the workspace holds.
        var next = [Int32](repeating: 0, count: batch)
        let prefillStart = DispatchTime.now()
        var s0 = 0
        while s0 < batch {
            var step = ForwardBatch()
            var s = s0
            while s < batch && step.tokenCount + promptLength <= model.maxTokens {
                step.append(tokens: prompts[s], startPosition: 0, blockTable: tables[s], blockSize: blockSize)
                s += 1
            }
            precondition(s > s0, "a prompt of \(promptLength) tokens exceeds the \(model.maxTokens)-token step")
            let applier = try lora?.prepare(sequences: s0..<s, rowsPerSequence: promptLength, forGraph: false)
            let logits = model.forward(step, cache: cache, lora: applier)
            gpu.argmax(logits, out: ids.rows(s - s0))
            let got = gpu.downloadInts(ids.rows(s - s0))
            for i in s0..<s { next[i] = got[i - s0] }
            s0 = s
        }
        let prefillSeconds = seconds(since: prefillStart)

        // Decode: step t feeds token t (t = 0 from the prefill) at position promptLength + t.
        let weightBytes = Double(Self.weightBytesReadPerStep(model))
        let adapterBytes = Double(lora?.bytesPerStep(batch: batch) ?? 0)
        // Per rank: ranks read their shards in parallel, so the floor is one rank's bytes over one GPU's bandwidth.
        let kvBytesPerToken = Double(KVCache.bytesPerToken(model.ranks[0].local, dtype: .bf16))
        var timed = 0
        var floorSeconds = 0.0
        var deviceMilliseconds = 0.0
        // Host time from the step's first copy to its graph launch (or last kernel launch), the device idle before it.
        var hostMilliseconds = 0.0
        // Host time of the LoRA manager's step plan (slots, segments, their copies) before the step.
        var prepareMilliseconds = 0.0
        var start = DispatchTime.now()
        var outputs = [[Int32]](repeating: [], count: batch)
        for t in 0..<(newTokens - 1) {
            if t == 2 { start = DispatchTime.now() }
            var step = ForwardBatch()
            for s in 0..<batch {
                step.append(tokens: [next[s]], startPosition: promptLength + t, blockTable: tables[s], blockSize: blockSize)
                outputs[s].append(next[s])
            }
            // The plan goes into the manager's persistent buffers before the graph body: a replay
            // skips the body's launches, and a capture may not contain host copies.
            let prepareStart = DispatchTime.now()
            let applier = try lora?.prepare(sequences: 0..<batch, rowsPerSequence: 1, forGraph: true)
            if t >= 2 { prepareMilliseconds += seconds(since: prepareStart) * 1000 }
            let body = {
                let logits = model.forward(step, cache: cache, lora: applier)
                gpu.argmax(logits, out: ids)
            }
            if useGraphs && t == 1 && tunesGEMMs { gpu.tuneGEMMs(graphKey: graphKey, step: body) }
            var hostSeconds = 0.0
            let ms = gpu.timeMilliseconds {
                let hostStart = DispatchTime.now()
                defer { hostSeconds = seconds(since: hostStart) }
                // Step 0 runs eagerly (every buffer the step needs is allocated before a capture).
                if useGraphs && t > 0 {
                    if gpus.count == 1 {
                        gpu.withGraph(key: graphKey, body)
                    } else {
                        // One graph per rank, captured and replayed on the rank's own thread (NCCL calls included).
                        let logits = model.forward(step, cache: cache, lora: applier, around: { r, rankStep in gpus[r].withGraph(key: graphKey, rankStep) })
                        gpu.argmax(logits, out: ids)
                    }
                } else {
                    body()
                }
            }
            next = gpu.downloadInts(ids)
            if t >= 2 { deviceMilliseconds += ms; hostMilliseconds += hostSeconds * 1000 }
            if t >= 2 {
                timed += 1
                let context = Double(promptLength + t + 1)
                floorSeconds += (weightBytes + adapterBytes + Double(batch) * context * kvBytesPerToken) / bandwidth
            }
        }
        let decodeSeconds = seconds(since: start)
        // One more step, eager, with every launch timed: where a step's device time goes.
        var kernels: [String: Any] = [:]
        do {
            var step = ForwardBatch()
            for s in 0..<batch {
                step.append(tokens: [next[s]], startPosition: promptLength + newTokens - 1, blockTable: tables[s], blockSize: blockSize)
            }
            let applier = try lora?.prepare(sequences: 0..<batch, rowsPerSequence: 1, forGraph: true)
            let launches = gpu.profileLaunches { gpu.argmax(model.forward(step, cache: cache, lora: applier), out: ids) }
            for (name, t) in launches {
                kernels[name] = ["launches": t.count, "us": (t.milliseconds * 1000).rounded()]
            }
        }
        let tokensPerSecond = Double(batch * timed) / decodeSeconds
        let floor = Double(batch * timed) / floorSeconds
        // The first sequence's tokens, to spot a model that produces garbage (e.g. one repeated id).
        let distinct = Set(outputs[0]).count
        var row: [String: Any] = [
            "batch": batch, "context": promptLength + newTokens, "prompt_len": promptLength, "new_tokens": newTokens,
            "adapters": lora?.refs.count ?? 0, "rank": lora?.rank ?? 0, "cuda_graphs": useGraphs, "tp_size": gpus.count, "tuned_gemms": tunesGEMMs,
            "tokens_per_s": tokensPerSecond, "floor_tokens_per_s": floor, "fraction_of_floor": tokensPerSecond / floor,
            "ms_per_step": decodeSeconds * 1000 / Double(timed), "device_ms_per_step": deviceMilliseconds / Double(timed),
            "host_ms_per_step": hostMilliseconds / Double(timed), "lora_prepare_ms_per_step": prepareMilliseconds / Double(timed), "floor_ms_per_step": floorSeconds * 1000 / Double(timed),
            "timed_steps": timed, "prefill_tokens_per_s": Double(batch * promptLength) / prefillSeconds,
            "weight_bytes_per_step": weightBytes, "distinct_tokens_seq0": distinct, "eager_step_kernels": kernels,
            "adapter_bytes_per_step": adapterBytes,
        ]
        if useGraphs, gpus.count == 1, let graph = gpu.graphSummaries[graphKey] { row["graph"] = graph }
        if let lora {
            row["lora_backend"] = lora.backend
            if lora.backend == "fused" {
                row["fused_decode_rows"] = lora.manager.options.fusedDecodeRows
                row["fused_consumer_rows"] = lora.manager.consumerRows
            }
            row["max_lora_chunk_size"] = lora.manager.options.maxChunkSize
            row["distinct_adapters_per_step"] = lora.distinctAdapters(batch: batch)
        }
        return row
    }

    func seconds(since start: DispatchTime) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
    }

    /// Bytes of weights one decode step reads: every layer's matrices and norms, the final norm and
    /// the LM head (embedding rows are negligible; a tied LM head is the embedding, read once).
    static func weightBytesReadPerStep(_ model: LlamaModel) -> Int {
        var elements = model.weights.finalNorm.count + model.weights.lmHead.count
        for l in model.weights.layers {
            elements += l.inputNorm.count + l.qkv.count + (l.qkvBias?.count ?? 0) + l.o.count + l.postAttentionNorm.count + l.gateUp.count + l.down.count
        }
        return elements * 2
    }
}
