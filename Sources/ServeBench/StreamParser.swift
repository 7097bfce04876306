import Foundation

/// Splits a server-sent-event byte stream into the payloads of its `data:` lines, whatever the
/// chunking of the bytes on the wire.
struct SSELineSplitter {
    private var pending: [UInt8] = []

    /// The payloads completed by `bytes` (without `data:` and the space after it), in order.
    mutating func feed(_ bytes: UnsafeRawBufferPointer) -> [[UInt8]] {
        var payloads: [[UInt8]] = []
        var start = 0
        for i in 0..<bytes.count where bytes[i] == 0x0A {
            pending.append(contentsOf: bytes[start..<i])
            if let p = Self.payload(of: pending) { payloads.append(p) }
            pending.removeAll(keepingCapacity: true)
            start = i + 1
        }
        pending.append(contentsOf: bytes[start..<bytes.count])
        return payloads
    }

    /// What is left when the stream ends without a final newline.
    mutating func finish() -> [[UInt8]] {
        defer { pending.removeAll() }
        return Self.payload(of: pending).map { [$0] } ?? []
    }

    private static let prefix = Array("data:".utf8)

    private static func payload(of line: [UInt8]) -> [UInt8]? {
        var end = line.count
        if end > 0, line[end - 1] == 0x0D { end -= 1 }
        guard end >= prefix.count, Array(line[0..<prefix.count]) == prefix else { return nil }
        var start = prefix.count
        if start < end, line[start] == 0x20 { start += 1 }
        return Array(line[start..<end])
    }
}

/// Finds values of object keys in JSON text without building the object: the streamed native
/// chunks repeat the whole output so far, so a full parse per token would cost quadratic time.
/// A key cannot match inside a string value, where its quotes would be escaped.
enum JSONScan {
    /// The byte offset just after `"key"` + optional spaces + `:` + optional spaces, last occurrence.
    static func valueStart(_ key: String, in json: [UInt8]) -> Int? {
        let pattern = Array("\"\(key)\"".utf8)
        guard json.count >= pattern.count else { return nil }
        var i = json.count - pattern.count
        while i >= 0 {
            if json[i] == 0x22, json[i..<(i + pattern.count)].elementsEqual(pattern) {
                var j = i + pattern.count
                while j < json.count, isSpace(json[j]) { j += 1 }
                if j < json.count, json[j] == 0x3A {
                    j += 1
                    while j < json.count, isSpace(json[j]) { j += 1 }
                    return j
                }
            }
            i -= 1
        }
        return nil
    }

    /// An integer value of `key`.
    static func int(_ key: String, in json: [UInt8]) -> Int? {
        guard var j = valueStart(key, in: json) else { return nil }
        var value = 0
        var digits = 0
        while j < json.count, json[j] >= 0x30, json[j] <= 0x39 {
            value = value * 10 + Int(json[j] - 0x30)
            digits += 1
            j += 1
        }
        return digits > 0 ? value : nil
    }

    /// True when `key` has a non-empty string value; false for `""`, `null` or no such key.
    static func hasNonEmptyString(_ key: String, in json: [UInt8]) -> Bool {
        guard let j = valueStart(key, in: json), j + 1 < json.count else { return false }
        return json[j] == 0x22 && json[j + 1] != 0x22
    }

    static func contains(_ key: String, in json: [UInt8]) -> Bool { valueStart(key, in: json) != nil }

    private static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D }
}

/// What one streamed chunk says, whatever the API.
struct StreamChunk: Equatable {
    /// Completion tokens so far, when the chunk says (native `meta_info`, OpenAI `usage`).
    var completionTokens: Int?
    var promptTokens: Int?
    /// The chunk carries generated text or ids.
    var hasOutput: Bool
    /// An error the server reported inside the stream.
    var error: String?
    var isDone: Bool

    init(payload: [UInt8], backend: BenchBackend) {
        isDone = payload.elementsEqual("[DONE]".utf8)
        error = nil
        completionTokens = nil
        promptTokens = nil
        hasOutput = false
        if isDone { return }
        if JSONScan.contains("error", in: payload) {
            error = Self.errorMessage(payload)
            return
        }
        completionTokens = JSONScan.int("completion_tokens", in: payload)
        promptTokens = JSONScan.int("prompt_tokens", in: payload)
        switch backend {
        case .sglang, .sglangNative:
            if completionTokens == nil, JSONScan.contains("output_ids", in: payload),
               let object = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any] {
                completionTokens = (object["output_ids"] as? [Any])?.count
            }
            hasOutput = (completionTokens ?? 0) > 0 || JSONScan.hasNonEmptyString("text", in: payload)
        case .openai:
            hasOutput = JSONScan.hasNonEmptyString("text", in: payload)
        case .openaiChat:
            hasOutput = JSONScan.hasNonEmptyString("content", in: payload)
                || JSONScan.hasNonEmptyString("reasoning_content", in: payload)
        }
    }

    private static func errorMessage(_ payload: [UInt8]) -> String {
        let text = String(decoding: payload, as: UTF8.self)
        guard let object = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any] else { return text }
        if let e = object["error"] as? [String: Any], let m = e["message"] as? String { return m }
        if let m = object["error"] as? String { return m }
        return text
    }
}
