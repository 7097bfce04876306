import Foundation

/// `--plot FILE.svg`: TTFT, TPOT and end-to-end latency (p50 solid, p99 dashed) against the
/// request rate of each run of a sweep, one panel each, as a self-contained SVG.
public enum LatencyPlot {
    struct Series {
        var label: String
        var points: [(x: Double, y: Double)]
        var dashed: Bool
    }

    public static func svg(_ outcome: BenchmarkOutcome) -> String {
        // A burst has no offered rate: its point sits at the achieved one.
        let runs = outcome.runs.sorted { x($0) < x($1) }
        let panels: [(String, KeyPath<RunReport, LatencySummary?>)] = [
            ("Time to first token (ms)", \.ttft), ("Time per output token (ms)", \.tpot), ("End-to-end latency (ms)", \.e2eLatency),
        ]
        let panelWidth = 380.0, height = 340.0, top = 60.0
        var out = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(panelWidth) * panels.count)" height="\(Int(top + height))" \
        font-family="Helvetica, Arial, sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="10" y="20" font-size="14" font-weight="bold">Latency against request rate\(escape(subtitle(runs)))</text>

        """
        for (i, (title, path)) in panels.enumerated() {
            let series = [
                Series(label: "p50", points: runs.compactMap { r in r[keyPath: path].map { (x(r), $0.median) } }, dashed: false),
                Series(label: "p99", points: runs.compactMap { r in r[keyPath: path].map { (x(r), $0.p99) } }, dashed: true),
            ]
            out += panel(title: title, series: series, originX: Double(i) * panelWidth, top: top, width: panelWidth, height: height)
        }
        return out + "</svg>\n"
    }

    static func x(_ r: RunReport) -> Double { r.requestRate.isFinite ? r.requestRate : r.requestThroughput }

    static func subtitle(_ runs: [RunReport]) -> String {
        guard let r = runs.first else { return "" }
        return " — \(r.backend), \(r.numAdapters == 0 ? "no adapters" : "\(r.numAdapters) adapters")"
    }

    static func panel(title: String, series: [Series], originX: Double, top: Double, width: Double, height: Double) -> String {
        let left = originX + 60, right = originX + width - 15, bottom = top + height - 50
        let xs = series.flatMap { $0.points.map(\.x) }, ys = series.flatMap { $0.points.map(\.y) }
        let xTicks = ticks(upTo: xs.max() ?? 1), yTicks = ticks(upTo: (ys.max() ?? 1) * 1.1)
        let xMax = xTicks.last!, yMax = yTicks.last!
        func px(_ v: Double) -> Double { left + (right - left) * v / xMax }
        func py(_ v: Double) -> Double { bottom - (bottom - top) * v / yMax }
        var s = "<g>\n<text x=\"\(f(left))\" y=\"\(f(top - 8))\" font-weight=\"bold\">\(escape(title))</text>\n"
        for t in yTicks {
            s += "<line x1=\"\(f(left))\" y1=\"\(f(py(t)))\" x2=\"\(f(right))\" y2=\"\(f(py(t)))\" stroke=\"#e5e5e5\"/>"
            s += "<text x=\"\(f(left - 6))\" y=\"\(f(py(t) + 4))\" text-anchor=\"end\">\(label(t))</text>\n"
        }
        for t in xTicks {
            s += "<line x1=\"\(f(px(t)))\" y1=\"\(f(bottom))\" x2=\"\(f(px(t)))\" y2=\"\(f(bottom + 4))\" stroke=\"#333\"/>"
            s += "<text x=\"\(f(px(t)))\" y=\"\(f(bottom + 18))\" text-anchor=\"middle\">\(label(t))</text>\n"
        }
        s += "<line x1=\"\(f(left))\" y1=\"\(f(bottom))\" x2=\"\(f(right))\" y2=\"\(f(bottom))\" stroke=\"#333\"/>"
        s += "<line x1=\"\(f(left))\" y1=\"\(f(top))\" x2=\"\(f(left))\" y2=\"\(f(bottom))\" stroke=\"#333\"/>\n"
        s += "<text x=\"\(f((left + right) / 2))\" y=\"\(f(bottom + 36))\" text-anchor=\"middle\">request rate (req/s)</text>\n"
        for (k, line) in series.enumerated() where !line.points.isEmpty {
            let color = line.dashed ? "#d62728" : "#1f77b4"
            let dash = line.dashed ? " stroke-dasharray=\"6 4\"" : ""
            let points = line.points.map { "\(f(px($0.x))),\(f(py($0.y)))" }.joined(separator: " ")
            s += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"\(dash) points=\"\(points)\"/>\n"
            for p in line.points { s += "<circle cx=\"\(f(px(p.x)))\" cy=\"\(f(py(p.y)))\" r=\"3\" fill=\"\(color)\"/>" }
            // The legend sits on the title line, right-aligned: p50 then p99.
            let lx = right - 110 + Double(k) * 58, ly = top - 8
            s += "\n<line x1=\"\(f(lx))\" y1=\"\(f(ly - 4))\" x2=\"\(f(lx + 22))\" y2=\"\(f(ly - 4))\" stroke=\"\(color)\" stroke-width=\"2\"\(dash)/>"
            s += "<text x=\"\(f(lx + 26))\" y=\"\(f(ly))\">\(line.label)</text>\n"
        }
        return s + "</g>\n"
    }

    /// Round ticks from 0 to at least `maximum`: steps of 1, 2 or 5 times a power of ten.
    static func ticks(upTo maximum: Double) -> [Double] {
        let top = maximum > 0 && maximum.isFinite ? maximum : 1
        let rough = top / 5
        let magnitude = pow(10, (log10(rough)).rounded(.down))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= rough }!
        let count = Int((top / step).rounded(.up))
        return (0...max(count, 1)).map { Double($0) * step }
    }

    static func label(_ v: Double) -> String {
        v == v.rounded() && abs(v) < 1e9 ? String(Int(v)) : String(format: "%g", v)
    }

    static func f(_ v: Double) -> String { String(format: "%.1f", v) }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
