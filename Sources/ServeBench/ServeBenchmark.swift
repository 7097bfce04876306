import AsyncHTTPClient
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import LoomCore
import ModelFormats
import Tokenization

/// `loom bench serve`: prepares one workload, then runs it at each request rate in turn (a sweep
/// stops after the first rate that misses the SLO) and reports each run.
public final class ServeBenchmark: Sendable {
    public let config: BenchmarkConfig
    let client: HTTPClient
    /// Where status lines go (standard error in the CLI).
    let log: @Sendable (String) -> Void

    public init(config: BenchmarkConfig, log: @escaping @Sendable (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }) throws {
        try config.validate()
        self.config = config
        self.log = log
        Self.raiseOpenFileLimit()
        var c = HTTPClient.Configuration()
        let inFlight = min(config.maxConcurrency ?? config.numPrompts, config.numPrompts)
        c.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: max(inFlight + 2, 8))
        c.timeout = .init(connect: .milliseconds(Int64(config.connectTimeout * 1000)))
        c.decompression = .disabled
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: c)
    }

    /// One connection per request in flight: lift the soft descriptor limit to the hard one, as
    /// `sglang.bench_serving` does.
    static func raiseOpenFileLimit() {
        #if os(Linux)
        let resource = Int32(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(resource, &limit)
    }

    /// Runs every rate and shuts the HTTP client down.
    public func run() async throws -> BenchmarkOutcome {
        do {
            let outcome = try await runRates()
            try await client.shutdown()
            return outcome
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    private func runRates() async throws -> BenchmarkOutcome {
        let model = config.backend.isNative ? config.model : try await resolveModel()
        let source = try await promptSource()
        let requests = Workload.make(config: config, source: source)
        let sender = RequestSender(client: client, config: config, model: model)
        if let dir = config.adapterDirectory { try await registerAdapters(from: dir) }
        try await warmUp(requests[0], sender: sender)

        var outcome = BenchmarkOutcome(slo: config.slo)
        for rate in config.requestRates {
            let arrival = try config.arrival(rate: rate)
            log("running \(requests.count) requests, \(arrival)" + (config.maxConcurrency.map { ", at most \($0) in flight" } ?? ""))
            let (results, duration) = await runOnce(requests, arrival: arrival, sender: sender)
            let report = RunReport(config: config, arrival: arrival, results: results, duration: duration)
            outcome.runs.append(report)
            if let slo = config.slo, let attained = report.sloAttainment {
                if attained < slo.attainmentTarget {
                    outcome.stoppedAtRate = rate
                    if config.requestRates.count > 1 {
                        log(String(format: "SLO attainment %.3f < %.3f at %@ req/s: the sweep stops here", attained, slo.attainmentTarget, RunReport.rateText(rate)))
                    }
                    break
                }
                outcome.maxPassingRate = rate
            }
        }
        return outcome
    }

    /// Sends `requests` at their arrival times, at most `--max-concurrency` at once; returns the
    /// results in request order and the wall time from the first send to the last answer.
    func runOnce(_ requests: [BenchRequest], arrival: ArrivalProcess, sender: RequestSender) async -> ([RequestResult], Double) {
        let offsets = Workload.offsets(config: config, arrival: arrival)
        let limiter = config.maxConcurrency.map { ConcurrencyLimiter(limit: $0) }
        let showBar = config.showProgress && ProgressBar.isTerminal
        let bar = showBar ? ProgressBar(total: requests.count, label: RunReport.rateText(arrival.rate) + " req/s") : nil
        var results = [RequestResult?](repeating: nil, count: requests.count)
        let start = monotonicSeconds()
        await withTaskGroup(of: RequestResult.self) { group in
            for (i, request) in requests.enumerated() {
                let wait = start + offsets[i] - monotonicSeconds()
                if wait > 0 { try? await Task.sleep(nanoseconds: UInt64(wait * 1e9)) }
                group.addTask {
                    await limiter?.acquire()
                    let sentAt = monotonicSeconds() - start
                    var result = await sender.send(request)
                    await limiter?.release()
                    result.sentAt = sentAt
                    bar?.tick(success: result.success)
                    return result
                }
            }
            for await result in group { results[result.index] = result }
        }
        let duration = monotonicSeconds() - start
        bar?.finish()
        return (results.map { $0! }, duration)
    }

    /// SGLang's warm-up: the first prompt with at most 32 new tokens, `--warmup-requests` times at once;
    /// refuses to go on when none succeeds.
    private func warmUp(_ first: BenchRequest, sender: RequestSender) async throws {
        guard config.warmupRequests > 0 else { return }
        var probe = first
        probe.outputLength = min(first.outputLength, 32)
        let results = await withTaskGroup(of: RequestResult.self) { group in
            for _ in 0..<config.warmupRequests { group.addTask { await sender.send(probe) } }
            return await group.reduce(into: [RequestResult]()) { $0.append($1) }
        }
        guard results.contains(where: \.success) else {
            throw BenchError.server("warm-up failed at \(config.baseURL)\(config.backend.path): \(results.first?.error ?? "no answer")")
        }
    }

    /// `POST /load_lora_adapter` for each adapter of the run that `GET /v1/models` does not list.
    private func registerAdapters(from directory: String) async throws {
        let listed = Set(((try? await getJSON("/v1/models"))?["data"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String })
        let missing = config.adapters.filter { !listed.contains($0) }
        guard !missing.isEmpty else { return }
        let root = URL(fileURLWithPath: directory, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath)).standardizedFileURL.path
        let start = monotonicSeconds()
        for (k, name) in missing.enumerated() {
            let path = (root as NSString).appendingPathComponent(name)
            var request = HTTPClientRequest(url: config.baseURL + "/load_lora_adapter")
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            if let key = config.apiKey, !key.isEmpty { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
            request.body = .bytes(Array(try JSONSerialization.data(withJSONObject: ["lora_name": name, "lora_path": path])))
            let response = try await client.execute(request, timeout: .seconds(600))
            let body = try await response.body.collect(upTo: 1 << 20).withUnsafeReadableBytes { String(decoding: $0, as: UTF8.self) }
            guard response.status.code == 200 else {
                throw BenchError.server("loading adapter \(name) from \(path): HTTP \(response.status.code) \(RequestSender.clip(body))")
            }
            if (k + 1) % 100 == 0 || k + 1 == missing.count {
                log(String(format: "registered %d/%d adapters (%.1f s)", k + 1, missing.count, monotonicSeconds() - start))
            }
        }
    }

    /// The first model of `GET /v1/models` when `--model` is not given (SGLang does the same).
    private func resolveModel() async throws -> String {
        if let m = config.model { return m }
        let json = try await getJSON("/v1/models")
        guard let data = json["data"] as? [[String: Any]], let id = data.first?["id"] as? String else {
            throw BenchError.server("GET \(config.baseURL)/v1/models listed no model; give --model")
        }
        return id
    }

    /// Random ids for the native backend, text otherwise; the vocabulary comes from `--vocab-size`,
    /// `--tokenizer`, or the served model's folder when `/get_model_info` names one on this machine.
    private func promptSource() async throws -> PromptSource {
        var tokenizer: Tokenizer?
        var vocab = config.vocabSize
        if let path = config.tokenizerPath {
            tokenizer = try Tokenizer(directory: URL(fileURLWithPath: path))
        } else if config.vocabSize == nil || !config.backend.isNative {
            let info = try? await getJSON("/get_model_info")
            if let path = info?["model_path"] as? String {
                if FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent("tokenizer.json")) {
                    tokenizer = try? Tokenizer(directory: URL(fileURLWithPath: path))
                }
                if vocab == nil { vocab = (try? ModelConfig.load(folderOrShapeName: path))?.vocabSize }
            }
        }
        if !config.backend.isNative {
            return tokenizer.map(PromptSource.decoded(by:)) ?? .words
        }
        guard let size = vocab ?? tokenizer?.vocabSize else {
            throw BenchError.invalidOption("random token ids need the vocabulary size: give --vocab-size or --tokenizer (the server's /get_model_info names no model folder here)")
        }
        return .ids(vocabSize: size, excluded: tokenizer.map(PromptSource.specialIds(of:)) ?? [])
    }

    func getJSON(_ path: String) async throws -> [String: Any] {
        var request = HTTPClientRequest(url: config.baseURL + path)
        if let key = config.apiKey, !key.isEmpty { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
        let response = try await client.execute(request, timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 16 << 20)
        let bytes = body.withUnsafeReadableBytes { Data($0) }
        guard response.status.code == 200 else {
            throw BenchError.server("GET \(config.baseURL)\(path): HTTP \(response.status.code) \(RequestSender.clip(String(decoding: bytes, as: UTF8.self)))")
        }
        guard let object = try JSONSerialization.jsonObject(with: bytes) as? [String: Any] else {
            throw BenchError.server("GET \(config.baseURL)\(path): not a JSON object")
        }
        return object
    }
}

/// All runs of one invocation, and where a sweep stopped.
public struct BenchmarkOutcome: Sendable {
    public var runs: [RunReport] = []
    public var slo: SLO?
    /// The highest rate whose SLO attainment met the target.
    public var maxPassingRate: Double?
    /// The rate whose attainment fell below the target, ending the sweep.
    public var stoppedAtRate: Double?
}
