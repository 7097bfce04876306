/// Errors raised while reading model files, adapters and configurations.
///
/// Every case names the file and, where there is one, the tensor, so a user can find what to fix.
public enum LoomError: Error, CustomStringConvertible, Equatable, Sendable {
    case fileNotFound(path: String)
    case invalidFile(path: String, reason: String)
    case missingTensor(path: String, tensor: String)
    case shapeMismatch(path: String, tensor: String, expected: [Int], actual: [Int])
    case unsupported(String)
    case invalidArgument(String)
    case outOfMemory(String)

    public var description: String {
        switch self {
        case .fileNotFound(let path):
            "file not found: \(path)"
        case .invalidFile(let path, let reason):
            "\(path): \(reason)"
        case .missingTensor(let path, let tensor):
            "\(path): tensor '\(tensor)' is missing"
        case .shapeMismatch(let path, let tensor, let expected, let actual):
            "\(path): tensor '\(tensor)' has shape \(actual), expected \(expected)"
        case .unsupported(let message):
            message
        case .invalidArgument(let message):
            message
        case .outOfMemory(let message):
            message
        }
    }
}
