import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A tqdm-like bar on standard error, redrawn at most ten times a second; off when standard
/// error is not a terminal.
final class ProgressBar: @unchecked Sendable {
    private let total: Int
    private let label: String
    private let lock = NSLock()
    private let start = monotonicSeconds()
    private var done = 0
    private var failed = 0
    private var lastDraw = 0.0

    static var isTerminal: Bool { isatty(STDERR_FILENO) != 0 }

    init(total: Int, label: String) {
        self.total = total
        self.label = label
        draw(force: true)
    }

    func tick(success: Bool) {
        lock.lock()
        done += 1
        if !success { failed += 1 }
        lock.unlock()
        draw(force: false)
    }

    func finish() {
        draw(force: true)
        FileHandle.standardError.write(Data("\n".utf8))
    }

    private func draw(force: Bool) {
        lock.lock()
        defer { lock.unlock() }
        let now = monotonicSeconds()
        guard force || now - lastDraw >= 0.1 || done == total else { return }
        lastDraw = now
        let width = 30
        let filled = total == 0 ? width : done * width / total
        let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
        let elapsed = now - start
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let remaining = rate > 0 ? Double(total - done) / rate : 0
        var line = "\r\(label) |\(bar)| \(done)/\(total) [\(Self.clock(elapsed))<\(Self.clock(remaining)), \(String(format: "%.2f", rate)) req/s]"
        if failed > 0 { line += " failed \(failed)" }
        FileHandle.standardError.write(Data(line.utf8))
    }

    static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%02d:%02d", s / 60, s % 60)
    }
}

/// At most `limit` requests in flight (`--max-concurrency`); waiters are served in arrival order.
actor ConcurrencyLimiter {
    private var available: Int
    private var waiters: [CheckedContinuation<Void, Never>] = []
    private var head = 0

    init(limit: Int) { available = limit }

    func acquire() async {
        if available > 0 {
            available -= 1
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    func release() {
        if head < waiters.count {
            let next = waiters[head]
            head += 1
            if head > 1024, head * 2 > waiters.count {
                waiters.removeFirst(head)
                head = 0
            }
            next.resume()
        } else {
            available += 1
        }
    }
}
