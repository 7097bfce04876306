import LoomCore
import Engine
import Foundation
import LoRA
import Logging
import Tokenization

/// How `loom serve` configured the HTTP side; SGLang's flag names in the comments.
public struct ServerConfiguration: Sendable {
    /// `--host`
    public var host = "127.0.0.1"
    /// `--port`; 0 picks a free port (tests).
    public var port = 30000
    /// `--api-key`: every route but `/health*` and `/metrics` needs `Authorization: Bearer <key>`.
    public var apiKey: String?
    /// `--served-model-name`; default: the engine's model name.
    public var servedModelName: String?
    /// `--tokenizer-path`; default: the model folder.
    public var tokenizerPath: String?
    /// `--max-loras-per-batch`, reported by `vllm:lora_requests_info` (`max_lora`).
    public var maxLorasPerBatch = 8
    /// Seconds that in-flight requests get to finish after SIGTERM before they are aborted.
    public var shutdownGracePeriod = 30.0
    /// Seconds `/health_generate` waits for its one token.
    public var healthCheckTimeout = 20.0
    /// `--admin-api-key`: when set, `/load_lora_adapter`, `/unload_lora_adapter` and
    /// `/flush_cache` need it (the `--api-key` is not enough).
    public var adminAPIKey: String?
    /// `--max-request-body-bytes`: larger bodies are refused with 413.
    public var maxBodySize = 8 << 20
    /// `--request-timeout`: seconds after which a generation is aborted (504, or an error frame
    /// when streaming had begun); nil: no limit.
    public var requestTimeout: Double?
    /// `--lora-allowed-dirs`: the folders (symlinks resolved) `/load_lora_adapter` may read from;
    /// nil: anything, as SGLang.
    public var loraAllowedDirs: [String]?
    /// The server arguments `/get_server_info` echoes (every flag of `loom serve`, snake_case).
    public var serverArgs: JSONObject = [:]

    public init() {}
}

/// What every route handler shares: the engine, the tokenizer and chat template of the served
/// model, the metrics, and whether the server is shutting down.
final class ServerState: Sendable {
    let service: any InferenceService
    let tokenizer: Tokenizer
    let chatTemplate: ChatTemplate
    let configuration: ServerConfiguration
    let metrics: ServerMetrics
    let logger: Logger
    let servedModelName: String
    let tokenizerPath: String
    let startTime = Int(Date().timeIntervalSince1970)
    private let flags = LockedFlag()

    init(service: any InferenceService, tokenizer: Tokenizer, chatTemplate: ChatTemplate, configuration: ServerConfiguration, logger: Logger) {
        self.service = service
        self.tokenizer = tokenizer
        self.chatTemplate = chatTemplate
        self.configuration = configuration
        self.logger = logger
        servedModelName = configuration.servedModelName ?? service.modelName
        tokenizerPath = configuration.tokenizerPath ?? service.modelPath
        metrics = ServerMetrics(modelName: servedModelName)
    }

    /// True once SIGTERM arrived: health checks answer 503 and new generations are refused.
    var isShuttingDown: Bool { flags.value }
    func beginShutdown() { flags.value = true }

    /// A fresh request id, as SGLang makes them (`uuid4().hex`).
    static func newRequestID() -> String {
        UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
    }

    /// The adapter names → paths that `/load_lora_adapter` and `/unload_lora_adapter` report.
    var loadedAdapters: JSON {
        var o = JSONObject()
        for a in service.adapters?.adapters ?? [] { o[a.name] = .string(a.path) }
        return .object(o)
    }

    /// SGLang's message when a request names an adapter but LoRA is off.
    static let loraNotEnabled = "LoRA is not enabled. Please set `--enable-lora` to enable LoRA."

    /// Resolves adapter names (nil = base) through the registry; unknown names and a server
    /// without LoRA are 400s in `shape`.
    func resolveAdapters(_ names: [String?], shape: APIError.Shape) throws -> [AdapterRef?] {
        guard names.contains(where: { $0 != nil }) else { return names.map { _ in nil } }
        guard let registry = service.adapters else {
            throw APIError(.badRequest, Self.loraNotEnabled, shape: shape)
        }
        do {
            return try registry.resolve(names)
        } catch {
            throw APIError.from(error, shape: shape)
        }
    }

    /// Refuses work while shutting down (503), as SGLang does once it is exiting.
    func checkAcceptingRequests(shape: APIError.Shape) throws {
        if isShuttingDown {
            throw APIError(.serviceUnavailable, "The server is shutting down.", type: "ServiceUnavailableError", shape: shape)
        }
    }
}

private final class LockedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var stored = false
    var value: Bool {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }
}
