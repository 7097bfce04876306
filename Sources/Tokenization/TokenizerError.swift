import Foundation

/// An error while loading a tokenizer. The message names the file and what is wrong with it.
public struct TokenizerError: Error, CustomStringConvertible, LocalizedError, Equatable {
    /// The file concerned (a path, or a file name such as "tokenizer.json" when loading from data).
    public let file: String
    /// What is wrong.
    public let message: String

    public init(file: String, message: String) {
        self.file = file
        self.message = message
    }

    public var description: String { "\(file): \(message)" }
    public var errorDescription: String? { description }
}
