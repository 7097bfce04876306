import Foundation
import Testing

@testable import Server

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The built `loom serve` as a user runs it: a child process on a free loopback port, its log in
/// a temporary file, stopped with SIGTERM. Tests through it see the real engine (stories260K and
/// the demo adapters), the real flags and the real signal handling.
final class LoomServeProcess: @unchecked Sendable {
    /// The `loom` executable next to this test bundle in the build folder, nil when not built.
    static var binary: URL? { loomBinary }

    /// The flags every test server gets: the bundled model with the two demo adapters.
    static let demoAdapters = [
        "--lora-paths", "pirate=\(TestSupport.url("Fixtures/demo-adapters/pirate").path)",
        "dragon=\(TestSupport.url("Fixtures/demo-adapters/dragon").path)", "--max-loras-per-batch", "4",
    ]

    let process: Process
    let port: Int
    let logPath: String

    /// Starts `loom serve <arguments> --port <free>` and waits until `/health` answers 200.
    init(_ arguments: [String]) throws {
        // A client writing to a connection the server already closed must get EPIPE, not die.
        signal(SIGPIPE, SIG_IGN)
        guard let binary = Self.binary else { throw TestHTTPError.malformed("the loom binary is not built") }
        port = try Self.freePort()
        logPath = NSTemporaryDirectory() + "loom-serve-\(UUID().uuidString).log"
        guard FileManager.default.createFile(atPath: logPath, contents: nil) else { throw TestHTTPError.malformed("cannot create \(logPath)") }
        let log = FileHandle(forWritingAtPath: logPath)
        process = Process()
        process.executableURL = binary
        process.arguments = ["serve", "--port", String(port)] + arguments
        process.currentDirectoryURL = TestSupport.root
        process.standardOutput = log
        process.standardError = log
        try process.run()
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            guard process.isRunning else { throw TestHTTPError.malformed("loom serve exited: \(logText)") }
            if (try? TestHTTP.requestSync(port: port, method: "GET", path: "/health"))?.status == 200 { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        process.terminate()
        throw TestHTTPError.malformed("loom serve did not become healthy: \(logText)")
    }

    deinit {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: logPath)
    }

    var baseURL: String { "http://127.0.0.1:\(port)" }

    /// What the server has logged so far.
    var logText: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Sends SIGTERM and waits for the exit status.
    func terminate() async throws -> Int32 {
        process.terminate()
        let p = process
        return try await TestHTTP.onThread {
            p.waitUntilExit()
            return p.terminationStatus
        }
    }

    func request(_ method: String, _ path: String, body: [UInt8]? = nil, headers: [String: String] = [:]) async throws -> TestResponse {
        var h = headers
        if body != nil, h["Content-Type"] == nil { h["Content-Type"] = "application/json" }
        return try await TestHTTP.request(port: port, method: method, path: path, headers: h, body: body)
    }

    func post(_ path: String, _ json: JSON, headers: [String: String] = [:]) async throws -> TestResponse {
        try await request("POST", path, body: json.serialized(), headers: headers)
    }

    func get(_ path: String, headers: [String: String] = [:]) async throws -> TestResponse {
        try await request("GET", path, headers: headers)
    }

    /// The engine's live state from `/get_server_info`.
    func engineState(headers: [String: String] = [:]) async throws -> JSON {
        try #require(try await get("/get_server_info", headers: headers).json()["internal_states"]?[0])
    }

    /// Waits until nothing runs or waits, every KV block is free or cached, and no adapter has
    /// requests in flight; returns the last state seen.
    func waitUntilIdle(headers: [String: String] = [:]) async throws -> (isIdle: Bool, state: JSON) {
        var state = try await engineState(headers: headers)
        for _ in 0..<400 {
            if state["running"] == 0, state["waiting"] == 0, state["in_flight_by_adapter"] == [:],
               let free = state["free_kv_blocks"]?.intValue, let cached = state["cached_kv_blocks"]?.intValue,
               free + cached == state["total_kv_blocks"]?.intValue {
                return (true, state)
            }
            try await Task.sleep(for: .milliseconds(50))
            state = try await engineState(headers: headers)
        }
        return (false, state)
    }

    static func freePort() throws -> Int { try freeLoopbackPort() }
}

/// Runs the repository's Python scripts (they need `requests` and `openai`, which `.ci/run`
/// installs).
enum PythonScripts {
    /// True when `python3` can import `modules`.
    static func canImport(_ modules: [String]) -> Bool {
        (try? run(["-c", "import " + modules.joined(separator: ", ")]))?.status == 0
    }

    static let hasClients = canImport(["requests", "openai"])

    /// `python3 <arguments>` in the package root; standard output and error.
    static func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try runProcess(URL(fileURLWithPath: "/usr/bin/env"), ["python3"] + arguments, in: TestSupport.root)
    }

    static func runAsync(_ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        try await TestHTTP.onThread { try run(arguments) }
    }
}

extension TestHTTP {
    /// A blocking request on the calling thread (for polling loops outside async code).
    static func requestSync(port: Int, method: String, path: String, headers: [String: String] = [:], body: [UInt8]? = nil) throws -> TestResponse {
        let c = try TestConnection(port: port)
        try c.send(method: method, path: path, headers: headers, body: body)
        let head = try c.readHead()
        return TestResponse(status: head.status, headers: head.headers, body: try c.readBody(headers: head.headers))
    }
}
