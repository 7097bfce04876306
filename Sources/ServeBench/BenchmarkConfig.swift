import Foundation

/// Errors of the serving benchmark; each names the option or the server answer to fix.
public enum BenchError: Error, CustomStringConvertible, Equatable, Sendable {
    case invalidOption(String)
    case server(String)

    public var description: String {
        switch self {
        case .invalidOption(let m): m
        case .server(let m): m
        }
    }
}

/// The API a benchmark drives. Names follow `sglang.bench_serving --backend`; `sglang-oai`,
/// `vllm` and the `-chat` variants are accepted as aliases of the OpenAI ones.
public enum BenchBackend: String, Sendable, CaseIterable {
    /// SGLang's native `POST /generate`.
    case sglang
    case sglangNative = "sglang-native"
    /// `POST /v1/completions`.
    case openai
    /// `POST /v1/chat/completions`.
    case openaiChat = "openai-chat"

    public init(name: String) throws {
        switch name {
        case "sglang": self = .sglang
        case "sglang-native": self = .sglangNative
        case "openai", "sglang-oai", "vllm", "lmdeploy": self = .openai
        case "openai-chat", "sglang-oai-chat", "vllm-chat", "lmdeploy-chat": self = .openaiChat
        default: throw BenchError.invalidOption("--backend must be sglang, sglang-native, openai or openai-chat, not '\(name)'")
        }
    }

    public var isNative: Bool { self == .sglang || self == .sglangNative }

    public var path: String {
        switch self {
        case .sglang, .sglangNative: "/generate"
        case .openai: "/v1/completions"
        case .openaiChat: "/v1/chat/completions"
        }
    }
}

/// How an OpenAI request names its adapter: `"model": "base:adapter"` (SGLang, Loom),
/// `"model": "adapter"` (vLLM), or the `lora_path` field.
public enum OpenAIAdapterStyle: String, Sendable {
    case colon, model, field
}

/// Token counts drawn uniformly from `lower...upper` (inclusive).
public struct LengthRange: Sendable, Equatable, CustomStringConvertible {
    public var lower: Int
    public var upper: Int

    public init(_ lower: Int, _ upper: Int) {
        precondition(lower <= upper, "empty length range \(lower)…\(upper)")
        self.lower = lower
        self.upper = upper
    }

    /// SGLang's `--random-*-len L --random-range-ratio r`: uniform in `[max(⌊L·r⌋, minimum), L]`.
    public static func sglang(length: Int, rangeRatio: Double, minimum: Int = 1) -> LengthRange {
        let low = min(max(Int(Double(length) * rangeRatio), minimum), length)
        return LengthRange(low, length)
    }

    /// `N` (fixed) or `LO,HI`: uniform in the half-open `[LO, HI)`, as S-LoRA writes its ranges.
    public static func parse(_ text: String, option: String) throws -> LengthRange {
        let parts = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        switch parts.count {
        case 1:
            guard let n = parts[0], n >= 1 else { break }
            return LengthRange(n, n)
        case 2:
            guard let lo = parts[0], let hi = parts[1], lo >= 1, hi > lo else { break }
            return LengthRange(lo, hi - 1)
        default:
            break
        }
        throw BenchError.invalidOption("\(option) takes N or LO,HI (uniform in [LO, HI)) with 1 ≤ LO < HI, not '\(text)'")
    }

    public func sample(_ rng: inout SeededGenerator) -> Int { rng.nextInt(in: lower..<(upper + 1)) }

    public var description: String { lower == upper ? "\(lower)" : "[\(lower), \(upper)]" }
}

/// Latency goals: a request meets its SLO when its TTFT and its TPOT are within them.
public struct SLO: Sendable, Equatable {
    public var ttftMs: Double?
    public var tpotMs: Double?
    /// The share of requests that must meet the SLO for a rate to pass (`--slo-attainment`).
    public var attainmentTarget: Double

    public init(ttftMs: Double?, tpotMs: Double?, attainmentTarget: Double = 0.9) {
        self.ttftMs = ttftMs
        self.tpotMs = tpotMs
        self.attainmentTarget = attainmentTarget
    }

    /// A failed request never meets the SLO; one with a single token has no TPOT to miss.
    public func isMet(by r: RequestResult) -> Bool {
        guard r.success, let ttft = r.ttft else { return false }
        if let limit = ttftMs, ttft * 1000 > limit { return false }
        if let limit = tpotMs, let tpot = r.tpot, tpot * 1000 > limit { return false }
        return true
    }
}

/// Everything one `loom bench serve` invocation needs, parsed and checked.
public struct BenchmarkConfig: Sendable {
    public var backend: BenchBackend = .sglang
    public var baseURL = "http://127.0.0.1:30000"
    /// The OpenAI `model`; nil asks `GET /v1/models` for the first id.
    public var model: String?
    public var numPrompts = 1000
    /// The rates to run, in order (`--request-rate`, or each of `--request-rate-sweep`).
    public var requestRates: [Double] = [.infinity]
    public var arrivalKind = "poisson"
    public var cv = 1.0
    public var maxConcurrency: Int?
    public var inputLengths = LengthRange(1024, 1024)
    public var outputLengths = LengthRange(1024, 1024)
    public var datasetName = "random"
    /// Where random token ids come from: the size of the vocabulary.
    public var vocabSize: Int?
    /// A model folder (or `tokenizer.json`) to turn random ids into text for the OpenAI backends.
    public var tokenizerPath: String?
    public var adapters: [String] = []
    public var distribution: AdapterDistribution = .uniform
    public var openAIAdapterStyle: OpenAIAdapterStyle = .colon
    public var seed: UInt64 = 1
    public var warmupRequests = 1
    public var ignoreEOS = true
    /// A JSON object merged into every request body (`--extra-request-body`); a nested object such
    /// as `sampling_params` is merged key by key.
    public var extraRequestBody: String?
    public var slo: SLO?
    public var showProgress = true
    public var outputDetails = false
    public var requestTimeout: TimeInterval = 6 * 3600
    /// How long a connection attempt may take; the client retries refused connections until then.
    public var connectTimeout: TimeInterval = 10
    public var apiKey: String? = ProcessInfo.processInfo.environment["OPENAI_API_KEY"]
    public var tag: String?
    /// Adapter folders to register (`POST /load_lora_adapter`) before the run: `DIR/<name>` for each
    /// adapter the server does not list yet (`--load-adapters`).
    public var adapterDirectory: String?
    /// Runs to compare each run with (`--baseline`).
    public var baselines: [Baseline] = []

    public init() {}

    public func arrival(rate: Double) throws -> ArrivalProcess {
        try ArrivalProcess(kind: arrivalKind, rate: rate, cv: cv)
    }

    /// Checks what the parser could not (combinations and ranges).
    public func validate() throws {
        if numPrompts < 1 { throw BenchError.invalidOption("--num-prompts must be at least 1") }
        if let c = maxConcurrency, c < 1 { throw BenchError.invalidOption("--max-concurrency must be at least 1") }
        if requestRates.isEmpty { throw BenchError.invalidOption("no request rate to run") }
        for r in requestRates { _ = try arrival(rate: r) }
        if !["random", "random-ids"].contains(datasetName) {
            throw BenchError.invalidOption("--dataset-name must be random or random-ids (synthetic prompts; no dataset downloads), not '\(datasetName)'")
        }
        if let slo, !(0...1).contains(slo.attainmentTarget) {
            throw BenchError.invalidOption("--slo-attainment must be within 0…1")
        }
        if let extra = extraRequestBody,
           (try? JSONSerialization.jsonObject(with: Data(extra.utf8))) as? [String: Any] == nil {
            throw BenchError.invalidOption("--extra-request-body must be a JSON object")
        }
        guard URL(string: baseURL)?.host != nil else { throw BenchError.invalidOption("--base-url '\(baseURL)' is not an http(s) URL") }
    }
}
