import ArgumentParser
import CPUBackend
import CUDABackend
import Engine
import Foundation
import Logging
import LoomCore
import LoRA
import ModelFormats
import Server

/// `loom serve`: SGLang's `launch_server` with the same flag names, defaults and startup checks,
/// serving SGLang's native API and the OpenAI-compatible API.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve a model and its LoRA adapters over HTTP (SGLang's native API and OpenAI's).")

    @Option(help: "A Hugging Face model folder (config.json, safetensors, tokenizer.json). Default: the bundled stories260K.")
    var modelPath: String?

    @Option(help: "Random bf16 weights of a named shape, made on the GPU (needs --device cuda; not with --model-path): \(RandomModel.shapeNames.joined(separator: ", ")). Served under the shape's name, with the bundled Mistral tokenizer unless --tokenizer-path is given.")
    var randomWeights: String?

    @Option(help: "The tokenizer folder (default: the model folder; with --random-weights, Fixtures/tokenizer-mistral-v1).")
    var tokenizerPath: String?

    @Flag(help: "Serve LoRA adapters (implied by --lora-paths).")
    var enableLora = false

    @OptionGroup(title: "LoRA")
    var loraFlags: LoRAFlags

    @Option(name: [.customLong("tp-size"), .customLong("tensor-parallel-size")], help: "Tensor-parallel ranks: threads on the CPU, GPUs joined by NCCL with --device cuda.")
    var tpSize = 1

    @Option(help: "The address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "The port to listen on.")
    var port = 30000

    @Option(help: "Require `Authorization: Bearer <key>` on every route but /health* and /metrics.")
    var apiKey: String?

    @Option(help: "Require `Authorization: Bearer <key>` on /load_lora_adapter, /unload_lora_adapter and /flush_cache instead of --api-key.")
    var adminApiKey: String?

    @Option(help: "The largest request body accepted, in bytes; larger ones get 413.")
    var maxRequestBodyBytes = 8 << 20

    @Option(help: "Seconds a generation may take; past it the request is aborted (504, or an error event when streaming). Default: no limit.")
    var requestTimeout: Double?

    @Option(parsing: .upToNextOption, help: "Folders /load_lora_adapter may read adapters from (symlinks resolved). Default: any path, as SGLang.")
    var loraAllowedDirs: [String] = []

    @Option(help: "debug, info, warning, error or critical.")
    var logLevel = "info"

    @Option(help: "cuda or cpu (default: cpu until the CUDA engine is wired).")
    var device: String?

    @Option(help: "The longest prompt plus completion (default: the model's max_position_embeddings).")
    var contextLength: Int?

    @Option(help: "The most requests running at once.")
    var maxRunningRequests: Int?

    @Option(help: "Waiting requests past which new ones are refused with 503 (default: unbounded).")
    var maxQueuedRequests: Int?

    @Option(help: "The model name in OpenAI responses and /v1/models (default: the model folder's name).")
    var servedModelName: String?

    @Option(help: "The most prompt tokens prefilled per step; -1 disables chunking.")
    var chunkedPrefillSize: Int?

    @Option(help: "The size of the KV cache in tokens (overrides --mem-fraction-static).")
    var maxTotalTokens: Int?

    @Option(help: "The fraction of device memory for weights and the KV cache (default 0.85 on a GPU: the KV cache takes what is free after loading, less 15% of the device; on the CPU, this fraction of host memory, default 0.2).")
    var memFractionStatic: Double?

    @Flag(help: "Run every decode step eagerly instead of from CUDA graphs.")
    var disableCudaGraph = false

    @Option(help: "The largest decode batch run from a CUDA graph (capped at --max-running-requests).")
    var cudaGraphMaxBs = 160

    @Option(parsing: .upToNextOption, help: "The batch sizes decode steps are padded to for CUDA graphs (default: 1 2 4 8 16 24 … up to --cuda-graph-max-bs).")
    var cudaGraphBs: [Int] = []

    @Flag(help: "Before a decode batch size's graph is first captured, time every cuBLASLt candidate of its GEMM shapes in whole replayed steps and keep the fastest (once per batch size, while that step's requests wait: at the Llama-3.1-8B shape, 47 captures of the step, each run 13 times; --device cuda, --tp-size 1).")
    var tuneGemms = false

    @Option(help: "Seed of the sampler for requests without sampling_seed.")
    var randomSeed: Int?

    @Option(help: "Seconds in-flight requests get to finish after SIGTERM before they are aborted.")
    var shutdownGracePeriod = 30.0

    @Flag(help: "Accepted for SGLang compatibility; Loom runs no model code from the model folder.")
    var trustRemoteCode = false

    mutating func validate() throws {
        do {
            try checkServerArgs()
        } catch let e as LoomError {
            throw ValidationError(e.description)
        }
    }

    /// SGLang's `ServerArgs.check_server_args` / `check_lora_server_args`, with its messages.
    func checkServerArgs() throws {
        func fail(_ m: String) -> LoomError { .invalidArgument(m) }
        guard tpSize >= 1 else { throw fail("--tp-size must be at least 1, got \(tpSize).") }
        guard (1...65535).contains(port) else { throw fail("--port must be between 1 and 65535, got \(port).") }
        guard Self.logLevels[logLevel.lowercased()] != nil else {
            throw fail("--log-level must be one of debug, info, warning, error, critical; got \(logLevel).")
        }
        if let device, !["cpu", "cuda"].contains(device) { throw fail("--device must be cpu or cuda, got \(device).") }
        if let shape = randomWeights {
            guard modelPath == nil else { throw fail("--random-weights and --model-path are mutually exclusive: give one of them.") }
            guard ModelConfig.namedShapes[shape.lowercased()] != nil else {
                throw fail("--random-weights: unknown shape '\(shape)' (known: \(RandomModel.shapeNames.joined(separator: ", "))).")
            }
            guard device == "cuda" else { throw fail("--random-weights needs --device cuda: the random weights are made on the GPU.") }
        }
        _ = try resolveDevice(device)
        if let name = servedModelName, name.contains(":") {
            throw fail("served_model_name cannot contain a colon (':') character. The colon is reserved for the 'model:adapter' syntax.")
        }
        if let n = contextLength, n < 1 { throw fail("--context-length must be positive, got \(n).") }
        if let n = maxRunningRequests, n < 1 { throw fail("--max-running-requests must be positive, got \(n).") }
        if let n = maxQueuedRequests, n < 1 { throw fail("--max-queued-requests must be positive, got \(n).") }
        if let n = maxTotalTokens, n < 1 { throw fail("--max-total-tokens must be positive, got \(n).") }
        if let n = chunkedPrefillSize, n == 0 || n < -1 { throw fail("--chunked-prefill-size must be positive or -1 (disabled), got \(n).") }
        if let f = memFractionStatic, !(f > 0 && f < 1) { throw fail("--mem-fraction-static must be in (0, 1), got \(f).") }
        if tuneGemms {
            guard try resolveDevice(device) == .cuda, tpSize == 1, !disableCudaGraph else {
                throw fail("--tune-gemms times decode steps in CUDA graphs on one GPU: it needs --device cuda, --tp-size 1 and CUDA graphs.")
            }
        }
        guard cudaGraphMaxBs >= 1 else { throw fail("--cuda-graph-max-bs must be positive, got \(cudaGraphMaxBs).") }
        if let bad = cudaGraphBs.first(where: { $0 < 1 }) { throw fail("--cuda-graph-bs must be positive batch sizes, got \(bad).") }
        guard shutdownGracePeriod >= 0 else { throw fail("--shutdown-grace-period must be at least 0.") }
        guard maxRequestBodyBytes >= 1 else { throw fail("--max-request-body-bytes must be positive, got \(maxRequestBodyBytes).") }
        if let t = requestTimeout, !(t > 0 && t.isFinite) { throw fail("--request-timeout must be a positive number of seconds, got \(t).") }
        for dir in loraAllowedDirs {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw fail("--lora-allowed-dirs: \(dir) is not a folder.")
            }
        }

        let l = loraFlags
        guard l.maxLorasPerBatch > 0 else { throw fail("max_loras_per_batch must be positive") }
        guard isLoRAEnabled else { return }
        if l.loraTargetModules.contains("all"), l.loraTargetModules.count > 1 {
            throw fail("If 'all' is specified in --lora-target-modules, it should be the only module specified.")
        }
        guard !l.loraPaths.isEmpty || (l.maxLoraRank != nil && !l.loraTargetModules.isEmpty) else {
            throw fail("When no initial --lora-paths is provided, you need to specify both --max-lora-rank and --lora-target-modules for LoRA initialization.")
        }
        if let loaded = l.maxLoadedLoras {
            guard loaded >= l.maxLorasPerBatch else {
                throw fail("max_loaded_loras should be greater than or equal to max_loras_per_batch. max_loaded_loras=\(loaded), max_loras_per_batch=\(l.maxLorasPerBatch)")
            }
            guard l.loraPaths.count <= loaded else {
                throw fail("The number of LoRA paths should not exceed max_loaded_loras. max_loaded_loras=\(loaded), lora_paths=\(l.loraPaths.count)")
            }
        }
        guard l.maxLoraChunkSize >= 16, l.maxLoraChunkSize <= 128, l.maxLoraChunkSize & (l.maxLoraChunkSize - 1) == 0 else {
            throw fail("--max-lora-chunk-size must be a power of 2 between 16 and 128.")
        }
        _ = try l.options()
        _ = try l.specs()
    }

    /// SGLang turns LoRA on when adapters are given, even without `--enable-lora`.
    var isLoRAEnabled: Bool { enableLora || !loraFlags.loraPaths.isEmpty }

    /// No model and no adapters named: the bundled stories260K with its demo adapters.
    var servesDemo: Bool { modelPath == nil && randomWeights == nil && loraFlags.loraPaths.isEmpty }

    static let logLevels: [String: Logger.Level] = [
        "trace": .trace, "debug": .debug, "info": .info, "warning": .warning, "error": .error, "critical": .critical,
    ]

    func run() throws {
        // The root command is synchronous, so the server runs in a task while this thread waits.
        let outcome = ResultBox()
        let semaphore = DispatchSemaphore(value: 0)
        let command = self
        Task {
            do {
                try await command.serve()
            } catch {
                outcome.error = error
            }
            semaphore.signal()
        }
        semaphore.wait()
        if let error = outcome.error { throw error }
    }

    func serve() async throws {
        let level = Self.logLevels[logLevel.lowercased()] ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "loom")
        if !enableLora && !loraFlags.loraPaths.isEmpty {
            logger.warning("--enable-lora is set to True because --lora-paths is provided.")
        }
        if !isLoRAEnabled && (loraFlags.maxLoraRank != nil || !loraFlags.loraTargetModules.isEmpty) {
            logger.warning("LoRA flags were given without --enable-lora or --lora-paths; LoRA is off.")
        }
        if isLoRAEnabled || servesDemo, loraAllowedDirs.isEmpty {
            logger.warning("--lora-allowed-dirs is not set: /load_lora_adapter may read any path this process can read. Set it (and --admin-api-key) on a shared network.")
        }
        let settings = try engineSettings()
        logger.info(
            "loading model",
            metadata: ["model_path": .string(settings.modelPath), "device": .string(settings.device.rawValue),
                       "adapters": .string(settings.loraPaths.map(\.name).joined(separator: ","))])
        let engine = try makeEngine(settings, logger: logger)
        if let adapters = engine.adapters?.adapters, !adapters.isEmpty {
            for a in adapters {
                logger.info("adapter loaded", metadata: ["adapter": .string(a.name), "path": .string(a.path), "pinned": .stringConvertible(a.pinned), "rank": .stringConvertible(a.maxRank)])
            }
        }
        var config = ServerConfiguration()
        config.host = host
        config.port = port
        config.apiKey = apiKey
        config.adminAPIKey = adminApiKey
        config.maxBodySize = maxRequestBodyBytes
        config.requestTimeout = requestTimeout
        config.loraAllowedDirs = loraAllowedDirs.isEmpty ? nil : loraAllowedDirs
        config.servedModelName = servedModelName ?? Self.defaultServedName(engine: engine, modelPathFlag: modelPath ?? randomWeights)
        config.tokenizerPath = tokenizerPath
        config.maxLorasPerBatch = loraFlags.maxLorasPerBatch
        config.shutdownGracePeriod = shutdownGracePeriod
        config.serverArgs = serverArgs(settings)
        let server = try LoomServer(service: engine, configuration: config, logger: Logger(label: "loom.server"))
        try await server.run()
        logger.info("server stopped")
    }

    /// SGLang's default `served_model_name`: the `--model-path` as given (a hub id stays a hub
    /// id, which is what clients put in `"model": "base:adapter"`); for the bundled model, the
    /// engine's name.
    static func defaultServedName(engine: any InferenceService, modelPathFlag: String?) -> String {
        modelPathFlag ?? (engine.modelName.isEmpty ? URL(fileURLWithPath: engine.modelPath).lastPathComponent : engine.modelName)
    }

    func engineSettings() throws -> EngineSettings {
        EngineSettings(
            modelPath: try randomWeights.map { try randomModelFolder($0) } ?? modelPath ?? BundledModel.directory(),
            randomWeights: randomWeights,
            device: try resolveDevice(device),
            lora: isLoRAEnabled || servesDemo ? try loraFlags.options() : nil,
            loraPaths: servesDemo ? try BundledModel.demoAdapters() : isLoRAEnabled ? try loraFlags.specs() : [],
            contextLength: contextLength, maxRunningRequests: maxRunningRequests, maxQueuedRequests: maxQueuedRequests,
            chunkedPrefillSize: chunkedPrefillSize,
            maxTotalTokens: maxTotalTokens, memFractionStatic: memFractionStatic, randomSeed: randomSeed, tpSize: tpSize,
            cudaGraphs: !disableCudaGraph, cudaGraphMaxBatchSize: cudaGraphMaxBs, cudaGraphBatchSizes: cudaGraphBs.isEmpty ? nil : cudaGraphBs,
            tunesGEMMs: tuneGemms)
    }

    /// The folder of a `--random-weights` shape: its config, a sparse weights file and the
    /// tokenizer's files (the engine reads the tokenizer from the model folder).
    func randomModelFolder(_ shape: String) throws -> String {
        let dir = try RandomModel.write(shape)
        var source = try tokenizerPath ?? BundledModel.mistralTokenizer()
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: source, isDirectory: &isDirectory), !isDirectory.boolValue {
            source = (source as NSString).deletingLastPathComponent
        }
        try RandomModel.addTokenizer(from: source, to: dir)
        return dir
    }

    /// Every flag, snake_case, for `/get_server_info` (both API keys redacted).
    func serverArgs(_ s: EngineSettings) -> JSONObject {
        let l = loraFlags
        return [
            "model_path": .string(s.modelPath), "random_weights": JSON(randomWeights), "tokenizer_path": .string(tokenizerPath ?? s.modelPath),
            "served_model_name": JSON(servedModelName), "host": .string(host), "port": .int(port),
            "api_key": apiKey == nil ? .null : "<redacted>", "admin_api_key": adminApiKey == nil ? .null : "<redacted>",
            "max_request_body_bytes": .int(maxRequestBodyBytes), "request_timeout": JSON(requestTimeout),
            "lora_allowed_dirs": loraAllowedDirs.isEmpty ? .null : JSON(loraAllowedDirs), "log_level": .string(logLevel), "device": .string(s.device.rawValue),
            "tp_size": .int(tpSize), "context_length": JSON(contextLength), "max_running_requests": JSON(maxRunningRequests),
            "max_queued_requests": JSON(maxQueuedRequests),
            "chunked_prefill_size": JSON(chunkedPrefillSize), "max_total_tokens": JSON(maxTotalTokens),
            "mem_fraction_static": JSON(memFractionStatic), "random_seed": JSON(randomSeed),
            "disable_cuda_graph": .bool(disableCudaGraph), "cuda_graph_max_bs": .int(cudaGraphMaxBs),
            "cuda_graph_bs": cudaGraphBs.isEmpty ? .null : JSON(cudaGraphBs), "tune_gemms": .bool(tuneGemms),
            "enable_lora": .bool(isLoRAEnabled),
            "lora_paths": .array(s.loraPaths.map { ["lora_name": .string($0.name), "lora_path": .string($0.path), "pinned": .bool($0.pinned)] }),
            "max_loras_per_batch": .int(l.maxLorasPerBatch), "max_loaded_loras": JSON(l.maxLoadedLoras),
            "max_lora_rank": JSON(l.maxLoraRank), "lora_target_modules": l.loraTargetModules.isEmpty ? .null : JSON(l.loraTargetModules),
            "lora_backend": .string(l.loraBackend), "max_lora_chunk_size": .int(l.maxLoraChunkSize),
            "lora_eviction_policy": .string(l.loraEvictionPolicy), "shutdown_grace_period": .double(shutdownGracePeriod),
        ]
    }
}

private final class ResultBox: @unchecked Sendable {
    var error: (any Error)?
}

// MARK: - The engine factory

/// Where the engine runs.
enum Device: String, Sendable {
    case cpu, cuda
}

/// What `loom serve` asks of the engine factory: the model, the device, LoRA (nil: off) and
/// SGLang's memory and batching flags (nil: the engine's defaults).
struct EngineSettings: Sendable {
    var modelPath: String
    /// The named shape of a `--random-weights` folder: its weights are made on the GPU.
    var randomWeights: String?
    var device: Device
    var lora: LoRAOptions?
    /// Adapters to load at start (`--lora-paths`), pinned ones included.
    var loraPaths: [LoRAPathSpec]
    var contextLength: Int?
    var maxRunningRequests: Int?
    var maxQueuedRequests: Int?
    /// -1: no chunking.
    var chunkedPrefillSize: Int?
    var maxTotalTokens: Int?
    var memFractionStatic: Double?
    var randomSeed: Int?
    var tpSize = 1
    /// Decode steps from CUDA graphs (`--disable-cuda-graph` turns them off); only on CUDA.
    var cudaGraphs = true
    var cudaGraphMaxBatchSize = 160
    var cudaGraphBatchSizes: [Int]?
    /// cuBLASLt's algorithms chosen in whole graph steps (`CUDABackend.tuneGEMMs`) before each decode graph's first capture.
    var tunesGEMMs = false
}

/// `--device`: explicit cpu or cuda; by default cuda when a GPU can be opened, else cpu.
func resolveDevice(_ flag: String?) throws -> Device {
    switch flag {
    case "cuda"?:
        return .cuda
    case "cpu"?:
        return .cpu
    case let other?:
        throw LoomError.invalidArgument("--device must be cpu or cuda, got \(other)")
    case nil:
        return (try? CUDABackend()) != nil ? .cuda : .cpu
    }
}

/// Builds the engine `loom serve` puts behind the HTTP server, started, with the
/// `--lora-paths` adapters loaded. On the CPU, `--tp-size` ranks are threads; on CUDA, GPUs joined by NCCL.
func makeEngine(_ settings: EngineSettings, logger: Logger) throws -> any InferenceService {
    var o = EngineOptions()
    if let n = settings.maxRunningRequests { o.maxRunningRequests = n }
    o.maxQueuedRequests = settings.maxQueuedRequests
    o.maxTotalTokens = settings.maxTotalTokens
    if let f = settings.memFractionStatic { o.memFractionStatic = f }
    if let n = settings.chunkedPrefillSize {
        // -1 turns chunking off: a prompt is prefilled in one step, up to the context length.
        o.chunkedPrefillSize = n == -1 ? (settings.contextLength ?? 8192) : n
    }
    o.contextLength = settings.contextLength
    o.cudaGraphMaxBatchSize = settings.cudaGraphMaxBatchSize
    o.cudaGraphBatchSizes = settings.cudaGraphBatchSizes
    let backends: [ComputeBackend]
    let communicators: [Communicator?]
    var gpus: [CUDABackend] = []
    switch settings.device {
    case .cpu:
        backends = (0..<settings.tpSize).map { _ in CPUBackend() }
        communicators = settings.tpSize == 1 ? [nil] : CPUCommunicator.group(size: settings.tpSize)
    case .cuda:
        // One GPU per rank (devices 0 ..< tp), joined by NCCL; rank r runs on its own thread.
        gpus = try (0..<settings.tpSize).map { try CUDABackend(device: $0) }
        backends = gpus
        communicators = settings.tpSize == 1 ? [nil] : try NCCLCommunicator.group(backends: gpus)
        o.memFractionStatic = settings.memFractionStatic ?? 0.85
        if settings.cudaGraphs {
            let runner = CUDAGraphRunner(gpus: gpus, tunesGEMMs: settings.tunesGEMMs)
            o.graphRunner = { rank, key, body in runner.run(rank: rank, key: key, body) }
        }
    }
    let start = Date()
    let load = {
        try InferenceEngine(
            modelPath: settings.modelPath, backends: backends, communicators: communicators, loraOptions: settings.lora,
            loraPaths: settings.loraPaths, options: o, modelName: settings.randomWeights ?? URL(fileURLWithPath: settings.modelPath).lastPathComponent,
            progress: { loaded, total in
                // About ten lines for a big model; nothing extra for a tiny one.
                let step = max(1, total / 10)
                if total >= 8 && (loaded % step == 0 || loaded == total) {
                    logger.info("loading weights", metadata: ["layers": .string("\(loaded)/\(total)")])
                }
            })
    }
    // Random weights: every upload of the load is filled on its GPU instead (`CUDABackend.randomWeightSeed`).
    let engine = try settings.randomWeights == nil ? load() : RandomModel.loading(on: gpus, load)
    logger.info("model loaded", metadata: [
        "seconds": .string(String(format: "%.1f", Date().timeIntervalSince(start))),
        "device": .string(settings.device.rawValue), "tp_size": .stringConvertible(settings.tpSize),
        "kv_tokens": .stringConvertible(engine.stats.totalBlocks * engine.stats.blockSize),
        "context_length": .stringConvertible(engine.maxContextLength),
        "cuda_graph_bs": .string(engine.graphBatchSizes.map(String.init).joined(separator: ",")),
    ])
    if let fused = engine.lora?.fusedSummary {
        logger.info("--lora-backend fused: every GEMM of a targeted group reads every slot's B, used or not", metadata: ["widening": .string(fused)])
    }
    engine.start()
    return engine
}

/// The engine's graph runner on CUDA: rank `r`'s share of a decode step is captured into, then
/// replayed from, a graph of GPU `r`, on the rank's own thread (NCCL collectives included).
/// With `tunesGEMMs` (one GPU), a key's first capture is preceded by `CUDABackend.tuneGEMMs` on that
/// step: replaying it rewrites the same KV slots with the same values, and sampling runs after the graph.
private final class CUDAGraphRunner: @unchecked Sendable {
    let gpus: [CUDABackend]
    let tunesGEMMs: Bool
    private var tunedKeys: Set<String> = []
    private let logger = Logger(label: "loom.cuda-graphs")

    init(gpus: [CUDABackend], tunesGEMMs: Bool) {
        precondition(!tunesGEMMs || gpus.count == 1, "--tune-gemms needs one GPU")
        self.gpus = gpus
        self.tunesGEMMs = tunesGEMMs
    }

    func run(rank: Int, key: String, _ body: () -> Void) {
        if tunesGEMMs && tunedKeys.insert(key).inserted {
            logger.info("Tuning GEMM algorithms before the graph's first capture", metadata: ["graph": .string(key)])
            let start = Date()
            let t = gpus[rank].tuneGEMMs(graphKey: key, step: body)
            logger.info("GEMM algorithms tuned", metadata: [
                "graph": .string(key), "seconds": .string(String(format: "%.1f", Date().timeIntervalSince(start))),
                "heuristic_step_ms": .string(String(format: "%.3f", t.heuristicMilliseconds)),
                "tuned_step_ms": .string(String(format: "%.3f", t.tunedMilliseconds)), "kept_tuned": .stringConvertible(t.keptTuned),
            ])
        }
        gpus[rank].withGraph(key: key, body)
    }
}
