import ArgumentParser
import Foundation

/// The flags of `loom bench serve`, named as `python -m sglang.bench_serving` names them where it
/// has them. Kept in the library so tests parse exactly what the CLI parses.
public struct BenchServeOptions: ParsableArguments {
    public init() {}

    @Option(help: "sglang (native /generate, also sglang-native), openai (/v1/completions) or openai-chat (/v1/chat/completions).")
    public var backend = "sglang"

    @Option(help: "The server's base URL; default http://HOST:PORT.")
    public var baseURL: String?

    @Option(help: "Host, when --base-url is not given.")
    public var host = "127.0.0.1"

    @Option(help: "Port, when --base-url is not given.")
    public var port = 30000

    @Option(help: "The OpenAI model name (default: the first of GET /v1/models).")
    public var model: String?

    @Option(help: "random or random-ids: random token ids (sent as input_ids to the native backend, as text to the OpenAI ones).")
    public var datasetName = "random"

    @Option(help: "Number of requests per run.")
    public var numPrompts = 1000

    @Option(help: "Prompt tokens (the most, with --random-range-ratio < 1).")
    public var randomInputLen = 1024

    @Option(help: "New tokens per request (the most, with --random-range-ratio < 1).")
    public var randomOutputLen = 1024

    @Option(help: "Lengths are uniform in [max(len·ratio, 1), len]; 1 makes them fixed.")
    public var randomRangeRatio = 0.0

    @Option(help: "Prompt tokens N, or LO,HI for uniform in [LO, HI) (overrides --random-input-len).")
    public var inputLenRange: String?

    @Option(help: "New tokens N, or LO,HI for uniform in [LO, HI) (overrides --random-output-len).")
    public var outputLenRange: String?

    @Option(help: "Vocabulary size for random token ids (default: from --tokenizer or the served model's folder).")
    public var vocabSize: Int?

    @Option(help: "A model folder or tokenizer.json: random ids skip its special tokens, and become text for the OpenAI backends.")
    public var tokenizer: String?

    @Option(help: "Requests per second, or inf to send all at once.")
    public var requestRate = "inf"

    @Option(help: "Rates to run in turn, comma-separated; stops after the first that misses the SLO.")
    public var requestRateSweep: String?

    @Option(help: "Arrival process at a finite rate: poisson, gamma (with --cv) or fixed (evenly spaced).")
    public var arrival = "poisson"

    @Option(help: "Coefficient of variation of gamma inter-arrival times (S-LoRA's cv; 1 is Poisson).")
    public var cv = 1.0

    @Option(help: "Most requests in flight at once.")
    public var maxConcurrency: Int?

    @Option(parsing: .upToNextOption, help: "Adapter names the requests use (one or more).")
    public var loraName: [String] = []

    @Option(help: "Use N adapters named by --adapter-pattern.")
    public var numAdapters: Int?

    @Option(help: "Adapter names for --num-adapters; {i} is 0..N-1.")
    public var adapterPattern = "adapter-{i}"

    @Option(help: "uniform, distinct (round robin), skewed (weight alpha^-i, SGLang), zipf (weight (i+1)^-alpha) or power (S-LoRA: ⌊N·U^(1/alpha)⌋).")
    public var loraRequestDistribution = "uniform"

    @Option(help: "alpha of skewed (> 1) and zipf (> 0).")
    public var loraZipfAlpha = 1.5

    @Option(help: "alpha of power, S-LoRA's: 1 is uniform, smaller favours the first adapters more.")
    public var loraPowerAlpha = 1.0

    @Option(help: "How OpenAI requests name the adapter: colon (model \"base:adapter\"), model (model \"adapter\", vLLM) or field (lora_path).")
    public var openaiLoraStyle = "colon"

    @Option(help: "SLO on time to first token, in ms.")
    public var sloTtftMs: Double?

    @Option(help: "SLO on time per output token, in ms.")
    public var sloTpotMs: Double?

    @Option(help: "Share of requests that must meet the SLO for a rate to pass.")
    public var sloAttainment = 0.9

    @Option(help: "Seed of the workload (lengths, prompts, adapters, arrivals).")
    public var seed: UInt64 = 1

    @Option(help: "Requests sent before measuring.")
    public var warmupRequests = 1

    @Flag(help: "Let requests stop at EOS (by default they run to their length).")
    public var disableIgnoreEos = false

    @Option(help: "A JSON object merged into every request body.")
    public var extraRequestBody: String?

    @Option(help: "Append one JSON line per run to this file.")
    public var outputFile: String?

    @Option(help: "Write all runs and the sweep's verdict as one JSON document.")
    public var outputJson: String?

    @Flag(help: "Keep per-request records (lengths, TTFTs, ITLs, errors) in the JSON.")
    public var outputDetails = false

    @Option(help: "Draw latency p50/p99 against request rate to this SVG file.")
    public var plot: String?

    @Flag(help: "No progress bar.")
    public var disableTqdm = false

    @Option(help: "Seconds before one request is abandoned.")
    public var requestTimeout = 21600.0

    @Option(help: "A label stored in the JSON.")
    public var tag: String?

    @Option(help: "Register DIR/<name> through /load_lora_adapter for each adapter the server does not list yet.")
    public var loadAdapters: String?

    @Option(help: "A previous --output-json or --output-file (the run without adapters): report throughput and TTFT relative to it.")
    public var baseline: String?

    public mutating func validate() throws {
        do {
            _ = try makeConfig()
        } catch let e as BenchError {
            throw ValidationError(e.description)
        }
    }

    /// The configuration these flags describe.
    public func makeConfig() throws -> BenchmarkConfig {
        var c = BenchmarkConfig()
        c.backend = try BenchBackend(name: backend)
        c.baseURL = (baseURL ?? "http://\(host):\(port)").trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        c.model = model
        c.datasetName = datasetName
        c.numPrompts = numPrompts
        guard randomInputLen >= 1, randomOutputLen >= 1 else { throw BenchError.invalidOption("--random-input-len and --random-output-len must be at least 1") }
        c.inputLengths = try inputLenRange.map { try LengthRange.parse($0, option: "--input-len-range") }
            ?? .sglang(length: randomInputLen, rangeRatio: randomRangeRatio)
        c.outputLengths = try outputLenRange.map { try LengthRange.parse($0, option: "--output-len-range") }
            ?? .sglang(length: randomOutputLen, rangeRatio: randomRangeRatio)
        c.vocabSize = vocabSize
        c.tokenizerPath = tokenizer
        c.requestRates = try requestRateSweep.map { try Self.rates($0, option: "--request-rate-sweep") } ?? [try Self.rate(requestRate, option: "--request-rate")]
        c.arrivalKind = arrival
        c.cv = cv
        c.maxConcurrency = maxConcurrency
        if !loraName.isEmpty, numAdapters != nil { throw BenchError.invalidOption("give --lora-name or --num-adapters, not both") }
        if let n = numAdapters {
            guard n >= 1 else { throw BenchError.invalidOption("--num-adapters must be at least 1") }
            c.adapters = try Workload.adapterNames(count: n, pattern: adapterPattern)
        } else {
            c.adapters = loraName
        }
        c.distribution = try AdapterDistribution(name: loraRequestDistribution, zipfAlpha: loraZipfAlpha, powerAlpha: loraPowerAlpha)
        guard let style = OpenAIAdapterStyle(rawValue: openaiLoraStyle) else {
            throw BenchError.invalidOption("--openai-lora-style must be colon, model or field")
        }
        c.openAIAdapterStyle = style
        if sloTtftMs != nil || sloTpotMs != nil { c.slo = SLO(ttftMs: sloTtftMs, tpotMs: sloTpotMs, attainmentTarget: sloAttainment) }
        c.seed = seed
        c.warmupRequests = max(0, warmupRequests)
        c.ignoreEOS = !disableIgnoreEos
        c.extraRequestBody = extraRequestBody
        c.showProgress = !disableTqdm
        c.outputDetails = outputDetails
        c.requestTimeout = requestTimeout
        c.tag = tag
        c.adapterDirectory = loadAdapters
        if let path = baseline { c.baselines = try Baseline.load(path: path) }
        try c.validate()
        return c
    }

    static func rate(_ text: String, option: String) throws -> Double {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        if t == "inf" || t == "infinity" { return .infinity }
        guard let r = Double(t), r > 0, r.isFinite else { throw BenchError.invalidOption("\(option): '\(text)' is not a positive rate or inf") }
        return r
    }

    static func rates(_ text: String, option: String) throws -> [Double] {
        let list = try text.split(separator: ",").map { try rate(String($0), option: option) }
        guard !list.isEmpty else { throw BenchError.invalidOption("\(option) lists no rate") }
        return list
    }
}
