// One chat completion to https://api.openai.com with java.net.http.HttpClient, configured only by
// what `douane env java` prints (a truststore and JAVA_TOOL_OPTIONS): no proxy or TLS code here.
//   java DouaneClient.java plain|stream MODEL TEXT
// Prints the status, the x-douane-request-id header and the body, one per line.
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;

public class DouaneClient {
    public static void main(String[] args) throws Exception {
        boolean stream = args[0].equals("stream");
        String body = "{\"model\": " + quote(args[1]) + ", \"stream\": " + stream
                + ", \"messages\": [{\"role\": \"user\", \"content\": " + quote(args[2]) + "}]}";
        HttpRequest request = HttpRequest.newBuilder(URI.create("https://api.openai.com/v1/chat/completions"))
                .header("authorization", "Bearer sk-java-client")
                .header("content-type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(body))
                .build();
        HttpResponse<String> response = HttpClient.newHttpClient().send(request, HttpResponse.BodyHandlers.ofString());
        System.out.println(response.statusCode());
        System.out.println(response.headers().firstValue("x-douane-request-id").orElse(""));
        System.out.println(response.body());
    }

    static String quote(String s) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') out.append('\\').append(c);
            else if (c < 0x20) out.append(String.format("\\u%04x", (int) c));
            else out.append(c);
        }
        return out.append('"').toString();
    }
}
