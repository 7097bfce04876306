import Foundation

/// The human report on standard output: SGLang's result block per run, then one line per rate.
public enum ReportTable {
    public static func render(_ outcome: BenchmarkOutcome) -> String {
        var text = outcome.runs.map(block).joined(separator: "\n")
        if outcome.runs.count > 1 { text += "\n" + sweep(outcome) }
        return text
    }

    static func block(_ r: RunReport) -> String {
        var lines: [String] = []
        func row(_ name: String, _ value: String) { lines.append(name.padding(toLength: 40, withPad: " ", startingAt: 0) + " " + value) }
        func num(_ v: Double?) -> String { v.map { String(format: "%.2f", $0) } ?? "-" }
        func rule(_ title: String) {
            let pad = max(0, 50 - title.count)
            lines.append(String(repeating: "-", count: pad / 2) + title + String(repeating: "-", count: pad - pad / 2))
        }
        lines.append("============ Serving Benchmark Result ============")
        row("Backend:", r.backend)
        row("Traffic request rate:", RunReport.rateText(r.requestRate))
        row("Arrival process:", r.arrival)
        row("Max request concurrency:", r.maxConcurrency.map(String.init) ?? "not set")
        row("Adapters:", r.numAdapters == 0 ? "none" : "\(r.numAdapters), \(r.loraRequestDistribution ?? "")" + (r.loraDistributionAlpha.map { " alpha \($0)" } ?? ""))
        row("Successful requests:", "\(r.completed)")
        row("Failed requests:", "\(r.failed)")
        row("Benchmark duration (s):", num(r.duration))
        row("Total input tokens:", "\(r.totalInputTokens)")
        row("Total generated tokens:", "\(r.totalOutputTokens)")
        row("Request throughput (req/s):", num(r.requestThroughput))
        row("Input token throughput (tok/s):", num(r.inputThroughput))
        row("Output token throughput (tok/s):", num(r.outputThroughput))
        row("Total token throughput (tok/s):", num(r.totalThroughput))
        row("Concurrency:", num(r.concurrency))
        if let a = r.sloAttainment, let slo = r.slo {
            var goal: [String] = []
            if let t = slo.ttftMs { goal.append("TTFT ≤ \(t) ms") }
            if let t = slo.tpotMs { goal.append("TPOT ≤ \(t) ms") }
            row("SLO attainment (\(goal.joined(separator: ", "))):", String(format: "%.1f%% (target %.0f%%)", a * 100, slo.attainmentTarget * 100))
        }
        if let b = r.baseline {
            row("Throughput vs baseline:", r.throughputVsBaseline.map { String(format: "%.3f (%.2f req/s without adapters)", $0, b.requestThroughput) } ?? "-")
            row("Output throughput vs baseline:", r.outputThroughputVsBaseline.map { String(format: "%.3f", $0) } ?? "-")
            row("Mean TTFT vs baseline:", r.meanTTFTVsBaseline.map { String(format: "%.3f (%.2f ms without adapters)", $0, b.meanTTFTMs ?? 0) } ?? "-")
        }
        for (title, short, s) in [("End-to-End Latency", "E2E Latency", r.e2eLatency), ("Time to First Token", "TTFT", r.ttft),
                                  ("Time per Output Token (excl. 1st token)", "TPOT", r.tpot), ("Inter-Token Latency", "ITL", r.itl)] {
            rule(title)
            row("Mean \(short) (ms):", num(s?.mean))
            row("Median \(short) (ms):", num(s?.median))
            row("P90 \(short) (ms):", num(s?.p90))
            row("P99 \(short) (ms):", num(s?.p99))
            if short == "ITL" { row("Max ITL (ms):", num(s?.max)) }
        }
        if !r.failures.isEmpty {
            rule("Failures")
            var counts: [String: Int] = [:]
            for f in r.failures { counts[f.error, default: 0] += 1 }
            for (error, n) in counts.sorted(by: { $0.value > $1.value }).prefix(10) {
                lines.append("\(n)× \(RequestSender.clip(error, limit: 300))")
            }
        }
        lines.append(String(repeating: "=", count: 50))
        return lines.joined(separator: "\n") + "\n"
    }

    /// One line per rate: what a sweep plot shows, in numbers.
    static func sweep(_ o: BenchmarkOutcome) -> String {
        let header = ["rate", "req/s", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "E2E p50", "E2E p99", "SLO", "failed"]
        var rows = [header]
        for r in o.runs {
            func ms(_ v: Double?) -> String { v.map { String(format: "%.1f", $0) } ?? "-" }
            rows.append([
                RunReport.rateText(r.requestRate), String(format: "%.2f", r.requestThroughput), String(format: "%.1f", r.outputThroughput),
                ms(r.ttft?.median), ms(r.ttft?.p99), ms(r.tpot?.median), ms(r.tpot?.p99), ms(r.e2eLatency?.median), ms(r.e2eLatency?.p99),
                r.sloAttainment.map { String(format: "%.1f%%", $0 * 100) } ?? "-", "\(r.failed)",
            ])
        }
        let widths = header.indices.map { c in rows.map { $0[c].count }.max()! }
        var lines = rows.map { row in zip(row, widths).map { String(repeating: " ", count: $1 - $0.count) + $0 }.joined(separator: "  ") }
        lines.insert("Sweep (latencies in ms)", at: 0)
        if let m = o.maxPassingRate { lines.append("Highest rate meeting the SLO: \(RunReport.rateText(m)) req/s") }
        if let s = o.stoppedAtRate { lines.append("Stopped at \(RunReport.rateText(s)) req/s: SLO attainment below target") }
        return lines.joined(separator: "\n") + "\n"
    }
}
