import LoomCore
import Foundation

/// The BPE model of a Hugging Face `tokenizer.json` (`"model": {"type": "BPE", ...}`), following
/// the `tokenizers` crate: per-character initial symbols (with optional byte fallback and fused
/// unknown tokens), then merges applied lowest rank first (ties: leftmost first).
final class BPEModel: @unchecked Sendable {
    struct Merge {
        var rank: Int32
        var newId: Int32
    }

    /// token (UTF-8 bytes) -> id. Keyed by bytes, not `String`, so canonically equivalent but
    /// distinct tokens stay distinct.
    let vocab: [[UInt8]: Int]
    /// id -> token, for ids of the model vocabulary.
    let idToToken: [String?]
    /// Single-scalar tokens, the hot path of the initial split.
    private let scalarIds: [UInt32: Int32]
    /// (leftId << 32 | rightId) -> merge.
    private let merges: [UInt64: Merge]
    /// Id of "<0xNN>" for each byte, -1 when absent.
    private let byteTokenIds: [Int32]
    private let unkId: Int32?
    private let fuseUnk: Bool
    private let byteFallback: Bool
    private let ignoreMerges: Bool
    private let continuingSubwordPrefix: String?
    private let endOfWordSuffix: String?

    init(json: JSONObject, file: String) throws {
        func fail(_ message: String) -> TokenizerError { TokenizerError(file: file, message: message) }

        guard let vocabObject = json["vocab"]?.objectValue else {
            throw fail("model.vocab is missing or not an object")
        }
        var vocab: [[UInt8]: Int] = [:]
        vocab.reserveCapacity(vocabObject.keys.count)
        var maxId = -1
        for (token, value) in vocabObject.pairs {
            guard let id = value.intValue, id >= 0 else {
                throw fail("model.vocab entry \"\(token)\" has an invalid id")
            }
            vocab[Array(token.utf8)] = id
            maxId = max(maxId, id)
        }
        var idToToken = [String?](repeating: nil, count: maxId + 1)
        var scalarIds: [UInt32: Int32] = [:]
        for (token, value) in vocabObject.pairs {
            let id = value.intValue!
            idToToken[id] = token
            var it = token.unicodeScalars.makeIterator()
            if let first = it.next(), it.next() == nil {
                scalarIds[first.value] = Int32(id)
            }
        }
        self.vocab = vocab
        self.idToToken = idToToken
        self.scalarIds = scalarIds

        continuingSubwordPrefix = json["continuing_subword_prefix"]?.stringValue
        endOfWordSuffix = json["end_of_word_suffix"]?.stringValue
        fuseUnk = json["fuse_unk"]?.boolValue ?? false
        byteFallback = json["byte_fallback"]?.boolValue ?? false
        ignoreMerges = json["ignore_merges"]?.boolValue ?? false
        if let unk = json["unk_token"]?.stringValue {
            // As in `tokenizers`, an unknown token missing from the vocabulary only matters when used;
            // we then simply produce nothing for unknown characters.
            unkId = vocab[Array(unk.utf8)].map { Int32($0) }
        } else {
            unkId = nil
        }
        // "dropout" is a training-time feature and is ignored: inference uses plain BPE.

        var byteTokenIds = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            let name = "<0x" + String(format: "%02X", b) + ">"
            if let id = vocab[Array(name.utf8)] { byteTokenIds[b] = Int32(id) }
        }
        self.byteTokenIds = byteTokenIds

        var merges: [UInt64: Merge] = [:]
        let mergeList = json["merges"]?.arrayValue ?? []
        merges.reserveCapacity(mergeList.count)
        let prefixLength = continuingSubwordPrefix?.utf8.count ?? 0
        for (rank, entry) in mergeList.enumerated() {
            let a: String
            let b: String
            if let s = entry.stringValue {
                guard let space = s.utf8.firstIndex(of: 0x20) else {
                    throw fail("model.merges[\(rank)] \"\(s)\" is not of the form \"a b\"")
                }
                a = String(s[..<space])
                b = String(s[s.utf8.index(after: space)...])
            } else if let pair = entry.arrayValue, pair.count == 2, let x = pair[0].stringValue,
                let y = pair[1].stringValue
            {
                a = x
                b = y
            } else {
                throw fail("model.merges[\(rank)] is neither \"a b\" nor [\"a\", \"b\"]")
            }
            let aBytes = Array(a.utf8)
            let bBytes = Array(b.utf8)
            guard let aId = vocab[aBytes] else { throw fail("merge token \"\(a)\" is not in the vocabulary") }
            guard let bId = vocab[bBytes] else { throw fail("merge token \"\(b)\" is not in the vocabulary") }
            let newBytes = aBytes + bBytes.dropFirst(min(prefixLength, bBytes.count))
            guard let newId = vocab[newBytes] else {
                throw fail("merge result \"\(String(decoding: newBytes, as: UTF8.self))\" is not in the vocabulary")
            }
            merges[UInt64(aId) << 32 | UInt64(bId)] = Merge(rank: Int32(rank), newId: Int32(newId))
        }
        self.merges = merges
    }

    var maxId: Int { idToToken.count - 1 }

    func tokenToId(_ token: String) -> Int? { vocab[Array(token.utf8)] }

    func idToTokenString(_ id: Int) -> String? {
        guard id >= 0 && id < idToToken.count else { return nil }
        return idToToken[id]
    }

    // MARK: - Tokenization

    private struct Symbol {
        var id: Int32
        var prev: Int32
        var next: Int32
        var len: Int32  // byte length; 0 = merged away
    }

    private struct HeapItem {
        var rank: Int32
        var pos: Int32
        var newId: Int32

        @inline(__always) func before(_ other: HeapItem) -> Bool {
            rank != other.rank ? rank < other.rank : pos < other.pos
        }
    }

    /// Appends the ids of one pre-tokenized word to `out`.
    func tokenize(_ word: String, into out: inout [Int]) {
        if word.isEmpty { return }
        if ignoreMerges, let id = vocab[Array(word.utf8)] {
            out.append(id)
            return
        }
        var symbols: [Symbol] = []
        symbols.reserveCapacity(word.utf8.count)

        @inline(__always) func add(_ id: Int32, _ len: Int) {
            let n = Int32(symbols.count)
            if n > 0 { symbols[Int(n) - 1].next = n }
            symbols.append(Symbol(id: id, prev: n - 1, next: -1, len: Int32(len)))
        }

        var unk: (id: Int32, len: Int)? = nil
        let usesAffixes = continuingSubwordPrefix != nil || endOfWordSuffix != nil
        let scalars = word.unicodeScalars
        let count = scalars.count
        var index = 0
        for scalar in scalars {
            defer { index += 1 }
            let byteLength = UTF8.width(scalar)
            var piece: String? = nil
            var id: Int32? = nil
            if !usesAffixes {
                id = scalarIds[scalar.value]
            } else {
                var s = String(scalar)
                if index > 0, let prefix = continuingSubwordPrefix { s = prefix + s }
                if index == count - 1, let suffix = endOfWordSuffix { s += suffix }
                piece = s
                id = vocab[Array(s.utf8)].map { Int32($0) }
            }
            if let id {
                if let u = unk {
                    add(u.id, u.len)
                    unk = nil
                }
                add(id, byteLength)
                continue
            }
            if byteFallback {
                let bytes: [UInt8] = piece.map { Array($0.utf8) } ?? Array(String(scalar).utf8)
                if bytes.allSatisfy({ byteTokenIds[Int($0)] >= 0 }) {
                    // Any pending unknown stays pending, exactly as in `tokenizers`.
                    for b in bytes { add(byteTokenIds[Int(b)], 1) }
                    continue
                }
            }
            if let unkId {
                if let u = unk {
                    if fuseUnk {
                        unk = (u.id, u.len + byteLength)
                    } else {
                        add(u.id, u.len)
                        unk = (unkId, byteLength)
                    }
                } else {
                    unk = (unkId, byteLength)
                }
            }
        }
        if let u = unk { add(u.id, u.len) }

        if symbols.count > 1 { mergeAll(&symbols) }
        for s in symbols where s.len != 0 { out.append(Int(s.id)) }
    }

    @inline(__always) private func mergeFor(_ a: Int32, _ b: Int32) -> Merge? {
        merges[UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))]
    }

    private func mergeAll(_ symbols: inout [Symbol]) {
        var heap: [HeapItem] = []
        heap.reserveCapacity(symbols.count)

        func push(_ item: HeapItem) {
            heap.append(item)
            var i = heap.count - 1
            while i > 0 {
                let parent = (i - 1) >> 1
                if heap[i].before(heap[parent]) {
                    heap.swapAt(i, parent)
                    i = parent
                } else {
                    break
                }
            }
        }
        func pop() -> HeapItem? {
            guard let last = heap.popLast() else { return nil }
            if heap.isEmpty { return last }
            let top = heap[0]
            heap[0] = last
            var i = 0
            let n = heap.count
            while true {
                let l = 2 * i + 1
                if l >= n { break }
                var m = l
                if l + 1 < n && heap[l + 1].before(heap[l]) { m = l + 1 }
                if heap[m].before(heap[i]) {
                    heap.swapAt(i, m)
                    i = m
                } else {
                    break
                }
            }
            return top
        }

        for i in 0..<(symbols.count - 1) {
            if let m = mergeFor(symbols[i].id, symbols[i + 1].id) {
                push(HeapItem(rank: m.rank, pos: Int32(i), newId: m.newId))
            }
        }

        while let top = pop() {
            let pos = Int(top.pos)
            if symbols[pos].len == 0 { continue }
            let nextPos = Int(symbols[pos].next)
            if nextPos < 0 { continue }
            let right = symbols[nextPos]
            // Skip stale entries.
            guard let m = mergeFor(symbols[pos].id, right.id), m.newId == top.newId else { continue }

            symbols[pos].id = top.newId
            symbols[pos].len += right.len
            symbols[pos].next = right.next
            symbols[nextPos].len = 0
            if right.next >= 0 && Int(right.next) < symbols.count {
                symbols[Int(right.next)].prev = Int32(pos)
            }

            let current = symbols[pos]
            if current.prev >= 0 {
                let prev = Int(current.prev)
                if let pm = mergeFor(symbols[prev].id, current.id) {
                    push(HeapItem(rank: pm.rank, pos: current.prev, newId: pm.newId))
                }
            }
            let next = Int(current.next)
            if next >= 0 && next < symbols.count {
                if let nm = mergeFor(current.id, symbols[next].id) {
                    push(HeapItem(rank: nm.rank, pos: Int32(pos), newId: nm.newId))
                }
            }
        }
    }
}
