import Foundation

/// Streams text for generated ids one at a time (the prefix-offset / read-offset technique of
/// text-generation-inference and vLLM).
///
/// Each push decodes a short window of ids twice, without and with the new id, and emits the text
/// that the new id added, but only once that text does not end in U+FFFD, so a character split
/// over several byte tokens is emitted whole. Both decodes start at the same id, so decoder steps
/// that act on the start of a text (Metaspace's leading-space strip) cancel out, and the space is
/// stripped only at the very start of the sequence. Concatenating all pieces and `flush()` gives
/// `decode(allIds)` (for a sequence without prompt). One exception, inherent to streaming: when a
/// run of byte-fallback tokens ("<0xNN>") is not valid UTF-8, `tokenizers` turns every byte of the
/// whole run into U+FFFD, including complete characters before the bad byte that were already
/// streamed; those stay as streamed.
public struct IncrementalDecoder {
    public let tokenizer: Tokenizer
    public let skipSpecialTokens: Bool
    /// All ids so far (prompt and generated).
    public private(set) var ids: [Int]
    private var prefixOffset: Int
    private var readOffset: Int

    /// `promptIds` are context only: their text is never emitted, but it decides, for example,
    /// whether the first generated token's leading space is kept.
    public init(tokenizer: Tokenizer, skipSpecialTokens: Bool = true, promptIds: [Int] = []) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
        self.ids = promptIds
        readOffset = promptIds.count
        // Start the window a few tokens back, but not in the middle of a character (the window
        // text would begin with U+FFFD) and not on text that decodes to nothing.
        var p = max(0, promptIds.count - 5)
        while p > 0 {
            let text = tokenizer.decode(promptIds[p..<promptIds.count], skipSpecialTokens: skipSpecialTokens)
            if let first = text.unicodeScalars.first, first != "\u{FFFD}" { break }
            p -= 1
        }
        prefixOffset = p
    }

    /// Adds one id; returns the new text (possibly "").
    public mutating func push(_ id: Int) -> String {
        ids.append(id)
        return emit(final: false)
    }

    /// Returns whatever is still held back (incomplete characters become U+FFFD, as in `decode`).
    public mutating func flush() -> String {
        emit(final: true)
    }

    private mutating func emit(final: Bool) -> String {
        guard readOffset < ids.count || final else { return "" }
        let prefixText = tokenizer.decode(ids[prefixOffset..<readOffset], skipSpecialTokens: skipSpecialTokens)
        let newText = tokenizer.decode(ids[prefixOffset...], skipSpecialTokens: skipSpecialTokens)
        let a = prefixText.unicodeScalars
        let b = newText.unicodeScalars
        // Normally prefixText is a prefix of newText; otherwise (a window that began with an
        // incomplete character) emit what follows the common prefix.
        var ia = a.startIndex
        var ib = b.startIndex
        while ia != a.endIndex, ib != b.endIndex, a[ia] == b[ib] {
            a.formIndex(after: &ia)
            b.formIndex(after: &ib)
        }
        if ib == b.endIndex { return "" }
        if !final, b.last == "\u{FFFD}" { return "" }
        prefixOffset = readOffset
        readOffset = ids.count
        return String(b[ib...])
    }
}
