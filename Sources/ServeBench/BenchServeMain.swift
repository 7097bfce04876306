import Foundation

/// The whole of `loom bench serve` after flag parsing: run, print the table, write the files.
public enum BenchServeMain {
    /// Where the report goes.
    public struct Outputs: Sendable {
        public var jsonLines: String?
        public var json: String?
        public var plot: String?
        public var printTable = true

        public init(jsonLines: String? = nil, json: String? = nil, plot: String? = nil, printTable: Bool = true) {
            self.jsonLines = jsonLines
            self.json = json
            self.plot = plot
            self.printTable = printTable
        }
    }

    public static func run(_ options: BenchServeOptions) async throws -> BenchmarkOutcome {
        try await run(config: try options.makeConfig(),
                      outputs: Outputs(jsonLines: options.outputFile, json: options.outputJson, plot: options.plot))
    }

    public static func run(config: BenchmarkConfig, outputs: Outputs) async throws -> BenchmarkOutcome {
        let outcome = try await ServeBenchmark(config: config).run()
        if outputs.printTable { print(ReportTable.render(outcome), terminator: "") }
        try write(outcome, to: outputs)
        return outcome
    }

    public static func write(_ outcome: BenchmarkOutcome, to outputs: Outputs) throws {
        if let path = outputs.jsonLines {
            var lines = Data()
            for run in outcome.runs {
                lines.append(try BenchmarkOutcome.encode(run.json, pretty: false))
                lines.append(0x0A)
            }
            try append(lines, to: path)
        }
        if let path = outputs.json {
            try createParent(of: path)
            try BenchmarkOutcome.encode(outcome.json, pretty: true).write(to: URL(fileURLWithPath: path))
        }
        if let path = outputs.plot {
            try createParent(of: path)
            try Data(LatencyPlot.svg(outcome).utf8).write(to: URL(fileURLWithPath: path))
        }
    }

    static func append(_ data: Data, to path: String) throws {
        try createParent(of: path)
        if !FileManager.default.fileExists(atPath: path), !FileManager.default.createFile(atPath: path, contents: nil) {
            throw BenchError.invalidOption("cannot create \(path)")
        }
        guard let handle = FileHandle(forWritingAtPath: path) else { throw BenchError.invalidOption("cannot write \(path)") }
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: data)
    }

    static func createParent(of path: String) throws {
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
    }

    /// Runs async work from a synchronous `run()` (the `loom` root command is not async).
    public static func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            do { box.result = .success(try await body()) } catch { box.result = .failure(error) }
            done.signal()
        }
        done.wait()
        return try box.result!.get()
    }
}

private final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, Error>?
}
