@_exported import LoomTestSupport
@_exported import LoomCore
import Engine
import Foundation
import Logging
import ServiceLifecycle
import Testing
import Tokenization

@testable import Server

/// Locates the package root (a directory holding `Fixtures/stories260k`) from this file, also
/// through symlinked checkouts; `LOOM_ROOT` overrides.
enum TestSupport {
    static let root: URL = {
        if let env = ProcessInfo.processInfo.environment["LOOM_ROOT"], !env.isEmpty {
            return URL(fileURLWithPath: env)
        }
        for start in [URL(fileURLWithPath: #filePath), URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()] {
            var dir = start.deletingLastPathComponent()
            while dir.path != "/" {
                if FileManager.default.fileExists(atPath: dir.appendingPathComponent("Fixtures/stories260k").path) { return dir }
                dir = dir.deletingLastPathComponent()
            }
        }
        fatalError("Cannot find the package root (a directory with Fixtures/stories260k) from \(#filePath); set LOOM_ROOT")
    }()

    static func url(_ relative: String) -> URL { root.appendingPathComponent(relative) }
}

/// The one place the HTTP tests get their engine from. The tests here use the deterministic fake;
/// real-engine tests can start a `TestServer` with any `InferenceService` next to them.
func makeService(lora: Bool = true, maxContextLength: Int = 512) throws -> FakeInferenceService {
    try FakeInferenceService(adapters: lora ? [("sql", "/adapters/sql"), ("python", "/adapters/python")] : nil, maxContextLength: maxContextLength)
}

/// A `LoomServer` listening on a free loopback port for the length of one test.
final class TestServer: @unchecked Sendable {
    let server: LoomServer
    let group: ServiceGroup
    let port: Int
    private let task: Task<Void, Error>

    private init(server: LoomServer, group: ServiceGroup, port: Int, task: Task<Void, Error>) {
        self.server = server
        self.group = group
        self.port = port
        self.task = task
    }

    static func start(
        _ service: any InferenceService, chatTemplate: ChatTemplate? = nil, configure: (inout ServerConfiguration) -> Void = { _ in }
    ) async throws -> TestServer {
        var config = ServerConfiguration()
        config.host = "127.0.0.1"
        config.port = 0
        config.shutdownGracePeriod = 5
        config.serverArgs = ["model_path": .string(service.modelPath), "port": 0]
        configure(&config)
        let (ports, portSink) = AsyncStream<Int>.makeStream()
        let logger = Logger(label: "loom.test") { _ in SwiftLogNoOpLogHandler() }
        let server: LoomServer
        if let chatTemplate {
            let tokenizer = try Tokenization.Tokenizer(directory: URL(fileURLWithPath: service.modelPath))
            server = LoomServer(service: service, tokenizer: tokenizer, chatTemplate: chatTemplate, configuration: config, logger: logger) { port in
                portSink.yield(port)
            }
        } else {
            server = try LoomServer(service: service, configuration: config, logger: logger) { port in portSink.yield(port) }
        }
        let group = server.makeServiceGroup(signals: [])
        let task = Task { try await group.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw TestHTTPError.closed }
        return TestServer(server: server, group: group, port: port, task: task)
    }

    /// Triggers the graceful shutdown and waits until the server has stopped.
    func stop() async throws {
        await group.triggerGracefulShutdown()
        try await task.value
    }

    func request(_ method: String, _ path: String, json: JSON? = nil, body: String? = nil, headers: [String: String] = [:]) async throws -> TestResponse {
        var h = headers
        var payload = body.map { Array($0.utf8) }
        if let json {
            payload = json.serialized()
            if h["Content-Type"] == nil { h["Content-Type"] = "application/json" }
        }
        return try await TestHTTP.request(port: port, method: method, path: path, headers: h, body: payload)
    }

    func post(_ path: String, _ json: JSON, headers: [String: String] = [:]) async throws -> TestResponse {
        try await request("POST", path, json: json, headers: headers)
    }

    func get(_ path: String, headers: [String: String] = [:]) async throws -> TestResponse {
        try await request("GET", path, headers: headers)
    }
}

/// Runs `body` against a fresh server for `service`, and stops the server afterwards.
func withServer(
    _ service: any InferenceService, chatTemplate: ChatTemplate? = nil, configure: (inout ServerConfiguration) -> Void = { _ in },
    _ body: (TestServer) async throws -> Void
) async throws {
    let server = try await TestServer.start(service, chatTemplate: chatTemplate, configure: configure)
    do {
        try await body(server)
    } catch {
        try? await server.stop()
        throw error
    }
    try await server.stop()
}

/// Polls `condition` until it holds or `seconds` pass.
func eventually(_ seconds: Double = 5, _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

extension JSON {
    /// Test access by path: `json["meta_info", "finish_reason", "type"]`.
    subscript(path: String...) -> JSON? {
        var v: JSON? = self
        for p in path { v = v?[p] }
        return v
    }

    subscript(index: Int) -> JSON? {
        guard let a = arrayValue, index < a.count else { return nil }
        return a[index]
    }
}
