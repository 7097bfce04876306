import Foundation

/// One entry of `added_tokens` in tokenizer.json.
struct AddedToken {
    var id: Int
    var content: String
    var special: Bool
    var singleWord: Bool
    var lstrip: Bool
    var rstrip: Bool
    var normalized: Bool
}

/// Finds added tokens in text: leftmost match first, the longest one at that position
/// (aho-corasick "LeftmostLongest", as `tokenizers` does), then applies single_word/lstrip/rstrip.
struct AddedTokenMatcher {
    private struct Pattern {
        var bytes: [UInt8]
        var token: AddedToken
    }

    /// Patterns by their first byte, longest first.
    private var byFirstByte: [[Pattern]] = Array(repeating: [], count: 256)
    private(set) var isEmpty = true

    init(tokens: [(pattern: String, token: AddedToken)]) {
        for (pattern, token) in tokens {
            let bytes = Array(pattern.utf8)
            guard let first = bytes.first else { continue }
            byFirstByte[Int(first)].append(Pattern(bytes: bytes, token: token))
            isEmpty = false
        }
        for i in 0..<256 where byFirstByte[i].count > 1 {
            // Stable: among equal patterns the first declared wins.
            byFirstByte[i] = byFirstByte[i].enumerated()
                .sorted { $0.element.bytes.count != $1.element.bytes.count
                    ? $0.element.bytes.count > $1.element.bytes.count : $0.offset < $1.offset }
                .map { $0.element }
        }
    }

    enum Segment {
        case text(String, offset: Int)
        case token(Int)
    }

    /// Splits `text` into plain text and added tokens. Plain segments carry their UTF-8 offset.
    func split(_ text: String) -> [Segment] {
        if isEmpty || text.isEmpty { return text.isEmpty ? [] : [.text(text, offset: 0)] }
        let bytes = Array(text.utf8)
        let n = bytes.count
        var segments: [Segment] = []
        var startOffset = 0
        var i = 0
        while i < n {
            let candidates = byFirstByte[Int(bytes[i])]
            var matched: Pattern? = nil
            if !candidates.isEmpty {
                for p in candidates where p.bytes.count <= n - i {
                    var k = 1
                    let pb = p.bytes
                    while k < pb.count && bytes[i + k] == pb[k] { k += 1 }
                    if k == pb.count {
                        matched = p
                        break
                    }
                }
            }
            guard let m = matched else {
                i += 1
                continue
            }
            var start = i
            var stop = i + m.bytes.count
            i = stop
            if m.token.singleWord {
                let startSpace = start == 0 || !endsWithWord(bytes, start)
                let stopSpace = stop == n || !startsWithWord(bytes, stop)
                if !startSpace || !stopSpace { continue }
            }
            if m.token.lstrip {
                start = max(leftmostSpaceAtEnd(bytes, start), startOffset)
            }
            if m.token.rstrip {
                stop += rightmostSpaceAtStart(bytes, stop)
                i = stop
            }
            if startOffset < start {
                segments.append(.text(decodeUTF8(bytes[startOffset..<start]), offset: startOffset))
            }
            segments.append(.token(m.token.id))
            startOffset = stop
        }
        if startOffset < n {
            segments.append(.text(decodeUTF8(bytes[startOffset...]), offset: startOffset))
        }
        return segments
    }

    /// The scalar that starts at byte `i` (valid UTF-8) and its length.
    private func scalar(at i: Int, in bytes: [UInt8]) -> (Unicode.Scalar, Int) {
        var j = i + 1
        while j < bytes.count && bytes[j] & 0xC0 == 0x80 { j += 1 }
        let s = decodeUTF8(bytes[i..<j]).unicodeScalars.first ?? "\u{FFFD}"
        return (s, j - i)
    }

    /// The start of the scalar that ends at byte `end`.
    private func scalarStart(before end: Int, in bytes: [UInt8]) -> Int {
        var i = end - 1
        while i > 0 && bytes[i] & 0xC0 == 0x80 { i -= 1 }
        return i
    }

    private func endsWithWord(_ bytes: [UInt8], _ end: Int) -> Bool {
        guard end > 0 else { return false }
        return scalar(at: scalarStart(before: end, in: bytes), in: bytes).0.isWordCharacter
    }

    private func startsWithWord(_ bytes: [UInt8], _ start: Int) -> Bool {
        guard start < bytes.count else { return false }
        return scalar(at: start, in: bytes).0.isWordCharacter
    }

    /// Offset where the whitespace that ends at `end` begins.
    private func leftmostSpaceAtEnd(_ bytes: [UInt8], _ end: Int) -> Int {
        var e = end
        while e > 0 {
            let s = scalarStart(before: e, in: bytes)
            if scalar(at: s, in: bytes).0.isRustWhitespace { e = s } else { break }
        }
        return e
    }

    /// Length in bytes of the whitespace that starts at `start`.
    private func rightmostSpaceAtStart(_ bytes: [UInt8], _ start: Int) -> Int {
        var i = start
        while i < bytes.count {
            let (c, w) = scalar(at: i, in: bytes)
            if c.isRustWhitespace { i += w } else { break }
        }
        return i - start
    }
}
