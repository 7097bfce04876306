import Foundation
import Testing

@testable import ServeBench

/// `loom bench serve` through its library entry point, against a fake SSE server on loopback.
@Suite struct EndToEndTests {
    func options(_ port: Int, _ extra: [String]) throws -> BenchServeOptions {
        try BenchServeOptions.parse(["--port", String(port), "--disable-tqdm", "--warmup-requests", "1"] + extra)
    }

    @Test func nativeRunReportsCountsLatenciesAndFailures() async throws {
        let server = try FakeSSEServer(tokenDelay: 0.004, firstTokenDelay: 0.02, rejectedAdapter: "adapter-2", modelPath: fixture("stories260k")).start()
        defer { server.stop() }
        let dir = try temporaryFolder("e2e")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var o = try options(server.port, [
            "--num-prompts", "40", "--request-rate", "80", "--arrival", "gamma", "--cv", "2", "--max-concurrency", "8",
            "--input-len-range", "8,33", "--output-len-range", "4,13", "--num-adapters", "4", "--lora-request-distribution", "distinct",
            // An SLO no served request can miss, however loaded the machine (a CI run once stalled
            // for 45 s): attainment then counts exactly the 30 of 40 requests that succeed.
            "--slo-ttft-ms", "600000", "--output-details", "--seed", "5", "--warmup-requests", "0",
        ])
        o.outputFile = dir + "/runs.jsonl"
        o.outputJson = dir + "/out/report.json"
        o.plot = dir + "/plot.svg"
        let outcome = try await BenchServeMain.run(o)
        let config = try o.makeConfig()
        let workload = Workload.make(config: config, source: .ids(vocabSize: 512, excluded: []))

        #expect(outcome.runs.count == 1)
        let run = outcome.runs[0]
        let rejected = workload.filter { $0.adapter == "adapter-2" }
        #expect(rejected.count == 10)
        #expect(run.completed == 30 && run.failed == 10)
        #expect(run.failures.allSatisfy { $0.httpStatus == 400 && $0.error.contains("unknown adapter") && $0.adapter == "adapter-2" })
        let served = workload.filter { $0.adapter != "adapter-2" }
        #expect(run.totalOutputTokens == served.reduce(0) { $0 + $1.outputLength })
        #expect(run.totalInputTokens == served.reduce(0) { $0 + $1.inputLength })
        #expect(run.ttft!.count == 30 && run.ttft!.min >= 20)
        #expect(run.itl!.count == served.reduce(0) { $0 + $1.outputLength - 1 })
        // No latency bounds beyond what the fake server's sleeps guarantee: SSE events can coalesce
        // on a loaded machine, so inter-token gaps have no reliable lower or upper bound.
        #expect(run.itl!.median >= 0)
        #expect(run.tpot!.count == 30 && run.e2eLatency!.p99 >= run.e2eLatency!.median)
        #expect(run.sloAttainment == 0.75)
        #expect(run.requestsPerAdapter == ["adapter-0": 10, "adapter-1": 10, "adapter-2": 10, "adapter-3": 10])

        // The server saw SGLang's native bodies with random ids below the vocabulary (512, read
        // from the model folder that /get_model_info names).
        let bodies = server.receivedBodies
        #expect(bodies.count == 40)
        #expect(bodies.allSatisfy { ($0["input_ids"] as? [Int])?.allSatisfy { (0..<512).contains($0) } == true })
        #expect(bodies.allSatisfy { ($0["sampling_params"] as? [String: Any])?["ignore_eos"] as? Bool == true })

        let line = try String(contentsOfFile: dir + "/runs.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(line.count == 1)
        let json = try JSONSerialization.jsonObject(with: Data(line[0].utf8)) as! [String: Any]
        for key in ["completed", "failed", "request_throughput", "input_throughput", "output_throughput", "total_throughput",
                    "mean_ttft_ms", "median_ttft_ms", "p90_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p99_tpot_ms",
                    "median_itl_ms", "p90_itl_ms", "p99_itl_ms", "mean_e2e_latency_ms", "p99_e2e_latency_ms", "slo_attainment",
                    "duration", "total_input_tokens", "total_output_tokens", "errors", "ttfts", "itls"] {
            #expect(json[key] != nil, "missing \(key)")
        }
        #expect(json["completed"] as? Int == 30 && (json["errors"] as? [Any])?.count == 10)
        #expect((json["request_rate"] as? Double) == 80)
        let document = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/out/report.json"))) as! [String: Any]
        #expect((document["runs"] as? [Any])?.count == 1)
        let svg = try String(contentsOfFile: dir + "/plot.svg", encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.contains("polyline") && svg.hasSuffix("</svg>\n"))
        #expect(ReportTable.render(outcome).split(separator: "\n").contains { $0.hasPrefix("Successful requests:") && $0.hasSuffix(" 30") })
    }

    @Test func sweepStopsAtTheFirstRateThatMissesTheSLO() async throws {
        let server = try FakeSSEServer(tokenDelay: 0.002, firstTokenDelay: 0.03, modelPath: fixture("stories260k")).start()
        defer { server.stop() }
        let base = ["--num-prompts", "6", "--input-len-range", "4", "--output-len-range", "3", "--vocab-size", "100", "--warmup-requests", "0"]
        let passing = try await BenchServeMain.run(
            config: try options(server.port, base + ["--request-rate-sweep", "50,100", "--slo-ttft-ms", "600000"]).makeConfig(),
            outputs: .init(printTable: false))
        #expect(passing.runs.map(\.requestRate) == [50, 100])
        #expect(passing.maxPassingRate == 100 && passing.stoppedAtRate == nil)
        #expect(LatencyPlot.svg(passing).components(separatedBy: "<polyline").count == 7)

        // A 30 ms first token can never meet a 1 ms TTFT SLO: the first rate fails and ends the sweep.
        let failing = try await BenchServeMain.run(
            config: try options(server.port, base + ["--request-rate-sweep", "50,100,200", "--slo-ttft-ms", "1"]).makeConfig(),
            outputs: .init(printTable: false))
        #expect(failing.runs.count == 1 && failing.stoppedAtRate == 50 && failing.maxPassingRate == nil)
        #expect(failing.runs[0].sloAttainment == 0)
        #expect(ReportTable.render(passing).contains("Sweep (latencies in ms)"))
    }

    @Test(arguments: [BenchBackend.openai, .openaiChat])
    func openAIBackendsCountChunksAndUsage(backend: BenchBackend) async throws {
        let server = try FakeSSEServer(tokenDelay: 0.002, firstTokenDelay: 0.005, modelPath: "/nonexistent").start()
        defer { server.stop() }
        let outcome = try await BenchServeMain.run(
            config: try options(server.port, [
                "--backend", backend.rawValue, "--num-prompts", "8", "--input-len-range", "5", "--output-len-range", "6",
                "--lora-name", "pirate", "dragon", "--max-concurrency", "2",
            ]).makeConfig(),
            outputs: .init(printTable: false))
        let run = outcome.runs[0]
        #expect(run.completed == 8 && run.failed == 0)
        #expect(run.totalOutputTokens == 48 && run.totalInputTokens == 40)
        #expect(run.itl!.count == 8 * 5)
        let bodies = server.receivedBodies
        #expect(bodies.count == 9)
        #expect(bodies.allSatisfy { ($0["model"] as? String)?.hasPrefix("fake-model:") == true })
        #expect(bodies.allSatisfy { ($0["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true })
    }

    @Test func registersMissingAdaptersAndComparesWithABaseline() async throws {
        let server = try FakeSSEServer(tokenDelay: 0.002, firstTokenDelay: 0.01, modelPath: "/nonexistent").start()
        defer { server.stop() }
        let dir = try temporaryFolder("baseline")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let common = ["--num-prompts", "6", "--input-len-range", "4", "--output-len-range", "4", "--vocab-size", "50", "--request-rate", "100"]
        var base = try options(server.port, common)
        base.outputJson = dir + "/base.json"
        _ = try await BenchServeMain.run(base)

        let lora = try options(server.port, common + ["--num-adapters", "3", "--load-adapters", dir + "/adapters", "--baseline", dir + "/base.json"])
        let outcome = try await BenchServeMain.run(config: try lora.makeConfig(), outputs: .init(printTable: false))
        #expect(server.loadedAdapters.map(\.name) == ["adapter-0", "adapter-1", "adapter-2"])
        #expect(server.loadedAdapters.allSatisfy { $0.path.hasPrefix("/") && $0.path.hasSuffix("/adapters/" + $0.name) })
        let run = outcome.runs[0]
        #expect(run.baseline?.requestRate == 100)
        #expect((run.throughputVsBaseline ?? 0) > 0.2 && (run.meanTTFTVsBaseline ?? 0) > 0)
        #expect(run.json["request_throughput_vs_baseline"] is Double)
        #expect(ReportTable.render(outcome).contains("Throughput vs baseline:"))

        // Already listed adapters are not registered again.
        _ = try await BenchServeMain.run(config: try lora.makeConfig(), outputs: .init(printTable: false))
        #expect(server.loadedAdapters.count == 3)
    }

    @Test func unreachableServerFailsTheWarmUpWithTheError() async throws {
        let server = try FakeSSEServer(tokenDelay: 0, firstTokenDelay: 0, modelPath: "/nonexistent").start()
        let port = server.port
        server.stop()
        var config = try options(port, ["--num-prompts", "2", "--vocab-size", "10"]).makeConfig()
        config.connectTimeout = 1
        await #expect(throws: BenchError.self) {
            _ = try await BenchServeMain.run(config: config, outputs: .init(printTable: false))
        }
    }
}
