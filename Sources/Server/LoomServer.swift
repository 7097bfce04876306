import Engine
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import Tokenization
import UnixSignals

/// The HTTP server: SGLang's native routes and the OpenAI-compatible routes in front of an
/// `InferenceService`, with Prometheus metrics, `--api-key` auth and graceful shutdown.
///
/// ```swift
/// let server = try LoomServer(service: engine, configuration: config)
/// try await server.run()   // until SIGTERM / SIGINT
/// ```
public final class LoomServer: Sendable {
    public static let version = "0.1.0"

    let state: ServerState
    let onServerRunning: @Sendable (Int) async -> Void

    /// Loads the tokenizer and chat template from `configuration.tokenizerPath` (default: the
    /// engine's model folder).
    public convenience init(
        service: any InferenceService, configuration: ServerConfiguration = ServerConfiguration(),
        logger: Logger = Logger(label: "loom.server"), onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) throws {
        let directory = URL(fileURLWithPath: configuration.tokenizerPath ?? service.modelPath)
        self.init(
            service: service, tokenizer: try Tokenizer(directory: directory),
            chatTemplate: try ChatTemplate(tokenizerDirectory: directory), configuration: configuration, logger: logger,
            onServerRunning: onServerRunning)
    }

    public init(
        service: any InferenceService, tokenizer: Tokenizer, chatTemplate: ChatTemplate,
        configuration: ServerConfiguration = ServerConfiguration(), logger: Logger = Logger(label: "loom.server"),
        onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) {
        state = ServerState(service: service, tokenizer: tokenizer, chatTemplate: chatTemplate, configuration: configuration, logger: logger)
        self.onServerRunning = onServerRunning
    }

    public var metrics: ServerMetrics { state.metrics }
    public var servedModelName: String { state.servedModelName }

    /// Every route, behind the error, logging and (with an API key) auth middleware.
    public func makeRouter() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        // SGLang allows every origin, method and header (FastAPI's CORSMiddleware).
        router.add(middleware: CORSMiddleware(
            allowOrigin: .originBased, allowHeaders: [.accept, .authorization, .contentType, .origin],
            allowMethods: [.get, .post, .put, .options], allowCredentials: true))
        router.add(middleware: ErrorMiddleware())
        router.add(middleware: RequestLogMiddleware())
        let apiKey = state.configuration.apiKey.flatMap { $0.isEmpty ? nil : $0 }
        let adminKey = state.configuration.adminAPIKey.flatMap { $0.isEmpty ? nil : $0 }
        if apiKey != nil || adminKey != nil {
            router.add(middleware: APIKeyMiddleware(apiKey: apiKey, adminAPIKey: adminKey))
        }
        state.addNativeRoutes(to: router)
        state.addOpenAIRoutes(to: router)
        return router
    }

    public func makeApplication() -> Application<RouterResponder<BasicRequestContext>> {
        let config = state.configuration
        let onRunning = onServerRunning
        let logger = state.logger
        return Application(
            router: makeRouter(),
            configuration: .init(address: .hostname(config.host, port: config.port), serverName: nil),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? config.port
                logger.info("Loom is serving", metadata: ["address": .string("http://\(config.host):\(port)")])
                await onRunning(port)
            },
            logger: logger)
    }

    /// The application plus the drain service, in a group that shuts down gracefully on `signals`:
    /// new work is refused (503) and health checks fail at once, in-flight requests get
    /// `shutdownGracePeriod` seconds to finish (then are aborted), and only then does the HTTP
    /// server stop.
    public func makeServiceGroup(signals: [UnixSignal] = [.sigterm, .sigint]) -> ServiceGroup {
        ServiceGroup(configuration: .init(
            services: [makeApplication(), DrainService(state: state)],
            gracefulShutdownSignals: signals,
            logger: state.logger))
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully and returns.
    public func run() async throws {
        try await makeServiceGroup().run()
    }
}

/// Waits for the group's graceful shutdown, then stops new work and lets the engine finish what
/// is in flight within the grace period. Runs after the application in the group, so it is shut
/// down first and the HTTP server keeps writing the in-flight responses meanwhile.
struct DrainService: Service {
    let state: ServerState

    func run() async throws {
        do {
            try await gracefulShutdown()
        } catch {
            // Cancelled rather than shut down: stop at once.
            state.beginShutdown()
            await state.service.shutdown(grace: 0)
            return
        }
        state.beginShutdown()
        let grace = state.configuration.shutdownGracePeriod
        state.logger.info("shutting down: refusing new requests, finishing in-flight ones", metadata: ["grace_seconds": .stringConvertible(grace)])
        await state.service.shutdown(grace: grace)
        state.logger.info("engine stopped")
    }
}
