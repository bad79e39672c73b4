// A TCP proxy in the test process that stands between the service and a real server (MariaDB),
// so a test can take the database away without touching the server other tests are using:
// cut() drops every connection and refuses new ones, restore() lets them through again, and
// cutWhen() drops the connection at an exact point, such as a given statement in a transaction.
import net from 'node:net';

export interface ProxyTarget {
  host: string;
  port: number;
}

export class TcpProxy {
  private server: net.Server | undefined;
  private listenPort = 0;
  private readonly sockets = new Set<net.Socket>();
  private trigger: { matches: (chunk: Buffer) => boolean; fired: () => void } | undefined;
  /** How many connections were opened to the target through this proxy. */
  connectionsOpened = 0;

  constructor(private readonly target: ProxyTarget) {}

  async start(): Promise<this> {
    await this.listen();
    return this;
  }

  get port(): number {
    if (this.listenPort === 0) throw new Error('The proxy is not started');
    return this.listenPort;
  }

  get isCut(): boolean {
    return this.server === undefined;
  }

  /** Drops every open connection and refuses new ones (the port answers "connection refused"). */
  async cut(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.trigger = undefined;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Accepts connections again, on the same port. */
  async restore(): Promise<void> {
    if (this.server) return;
    await this.listen(this.listenPort);
  }

  /**
   * Cuts (as cut()) as soon as the client sends data that matches, before that data reaches the
   * server. Resolves once it has happened.
   */
  cutWhen(matches: (chunk: Buffer) => boolean): Promise<void> {
    return new Promise<void>((resolve) => {
      this.trigger = { matches, fired: resolve };
    });
  }

  async close(): Promise<void> {
    await this.cut();
  }

  private listen(port = 0): Promise<void> {
    const server = net.createServer((client) => this.connect(client));
    return new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        this.server = server;
        this.listenPort = (server.address() as net.AddressInfo).port;
        resolve();
      });
    });
  }

  private connect(client: net.Socket): void {
    const upstream = net.connect(this.target.port, this.target.host);
    this.connectionsOpened += 1;
    this.sockets.add(client);
    this.sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', drop);
    client.on('data', (chunk: Buffer) => {
      const trigger = this.trigger;
      if (trigger && trigger.matches(chunk)) {
        void this.cut().then(trigger.fired);
        return;
      }
      if (!upstream.write(chunk)) client.pause();
    });
    upstream.on('drain', () => client.resume());
    upstream.on('data', (chunk: Buffer) => {
      if (!client.write(chunk)) upstream.pause();
    });
    client.on('drain', () => upstream.resume());
  }
}
