import Foundation
import Testing

@testable import ServeBench

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The built `loom bench serve` against the built `loom serve` on the CPU (stories260K and the two
/// demo adapters), as a user runs them.
@Suite(.serialized, .enabled(if: LoomBinary.url != nil, "the loom binary is not built next to the tests"))
struct LoomServeTests {
    @Test func benchServeMeasuresLoomServe() throws {
        let port = try LoomBinary.freePort()
        let logDir = try temporaryFolder("loom-serve-log")
        defer { try? FileManager.default.removeItem(atPath: logDir) }
        let log = logDir + "/serve.log"
        let server = try LoomBinary.start(log: log, [
            "serve", "--port", String(port), "--log-level", "warning",
            "--lora-paths", "pirate=\(fixture("demo-adapters/pirate"))", "dragon=\(fixture("demo-adapters/dragon"))",
        ])
        defer {
            server.terminate()
            server.waitUntilExit()
        }
        do {
            try LoomBinary.waitForHealth(port: port, process: server, seconds: 60)
        } catch {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            // Until the engine is wired into `loom serve` (the lead's TODO), there is nothing to measure.
            if text.contains("not wired yet") { try Test.cancel("loom serve cannot serve yet: \(text.suffix(300))") }
            Issue.record("loom serve did not become healthy: \(error)\n\(text.suffix(2000))")
            return
        }
        let dir = try temporaryFolder("loom-serve")
        defer { try? FileManager.default.removeItem(atPath: dir) }

        let native = [
            "bench", "serve", "--port", String(port), "--num-prompts", "12", "--request-rate", "30", "--max-concurrency", "4",
            "--input-len-range", "8,33", "--output-len-range", "8,17", "--lora-name", "pirate", "dragon",
            "--lora-request-distribution", "distinct", "--disable-tqdm", "--seed", "3",
            "--output-json", dir + "/native.json", "--output-file", dir + "/runs.jsonl",
        ]
        let run = try LoomBinary.run(native)
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("Serving Benchmark Result"))
        let report = try LoomBinary.firstRun(dir + "/native.json")
        let config = try BenchServeOptions.parse(Array(native.dropFirst(2))).makeConfig()
        let workload = Workload.make(config: config, source: .words)
        #expect(report["completed"] as? Int == 12 && report["failed"] as? Int == 0, "\(report["errors"] ?? "")")
        #expect(report["total_output_tokens"] as? Int == workload.reduce(0) { $0 + $1.outputLength })
        #expect((report["total_input_tokens"] as? Int ?? 0) >= workload.reduce(0) { $0 + $1.inputLength })
        #expect(report["requests_per_adapter"] as? [String: Int] == ["pirate": 6, "dragon": 6])
        for key in ["mean_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p90_itl_ms", "p99_e2e_latency_ms", "output_throughput"] {
            #expect((report[key] as? Double ?? -1) > 0, "\(key)")
        }

        // The OpenAI route, and an adapter the server does not know: failures carry the status and body.
        let openai = try LoomBinary.run([
            "bench", "serve", "--backend", "openai", "--port", String(port), "--num-prompts", "4", "--request-rate", "inf",
            "--input-len-range", "6", "--output-len-range", "5", "--lora-name", "pirate", "nobody", "--lora-request-distribution", "distinct",
            "--disable-tqdm", "--warmup-requests", "1", "--output-file", dir + "/runs.jsonl",
        ])
        #expect(openai.status == 0, "\(openai.stderr)")
        let lines = try String(contentsOfFile: dir + "/runs.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 2)
        let second = try JSONSerialization.jsonObject(with: Data(lines[1].utf8)) as! [String: Any]
        #expect(second["completed"] as? Int == 2 && second["failed"] as? Int == 2)
        #expect(second["total_output_tokens"] as? Int == 10)
        let errors = second["errors"] as? [[String: Any]] ?? []
        #expect(errors.count == 2 && errors.allSatisfy { $0["adapter"] as? String == "nobody" && ($0["http_status"] as? Int ?? 0) >= 400 })
    }
}

/// Finds and runs the `loom` executable of this build.
enum LoomBinary {
    static var url: URL? { loomBinary }

    /// Starts `loom` in the background, standard output and error into `log`.
    static func start(log: String, _ arguments: [String]) throws -> Process {
        let p = Process()
        p.executableURL = url!
        p.arguments = arguments
        p.currentDirectoryURL = packageRoot
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = FileHandle(forWritingAtPath: log)
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        return p
    }

    static func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try runProcess(url!, arguments)
    }

    static func firstRun(_ path: String) throws -> [String: Any] {
        let document = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        return (document["runs"] as! [[String: Any]])[0]
    }

    static func freePort() throws -> Int { try freeLoopbackPort() }

    /// Polls `GET /health` until it answers 200.
    static func waitForHealth(port: Int, process: Process, seconds: Double) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            guard process.isRunning else { throw POSIXError(.ECHILD) }
            if healthStatus(port: port) == 200 { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw POSIXError(.ETIMEDOUT)
    }

    static func healthStatus(port: Int) -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else { return nil }
        let request = Array("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 12 else { return nil }
        return Int(String(decoding: buffer[9..<12], as: UTF8.self))
    }
}
