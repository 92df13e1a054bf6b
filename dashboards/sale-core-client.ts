// The sale core's admin API, the only way the dashboards create, read or end a sale
// (`Authorization: Bearer $SALE_ADMIN_TOKEN`). The token stays on the server: the browser never sees it.
import { dashboardError } from './errors.js';

export interface SaleSku {
  sku: string;
  title: string;
  price: number;
  stock: number;
  limit_per_shopper: number;
}

export interface SaleDefinition {
  id: string;
  title: string;
  starts_at: number;
  ends_at: number;
  payment_window_minutes: number;
  admission_rate_per_second?: number;
  skus: SaleSku[];
  follow_up_sale_id?: string;
}

export interface AdminSale {
  id: string;
  title: string;
  starts_at: number;
  ends_at: number;
  status?: string;
  ledger: {
    available: Record<string, number>;
    reserved: Record<string, number>;
    sold: Record<string, number>;
    initial: Record<string, number>;
  };
}

export class SaleCoreClient {
  private followUpField: Promise<boolean> | undefined;

  constructor(
    readonly url: string,
    private readonly adminToken: string,
  ) {}

  private async call<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; json: T }> {
    let res: Response;
    try {
      res = await fetch(`${this.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${this.adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(5000),
      });
    } catch (error) {
      throw dashboardError('SALE_CORE_UNAVAILABLE', `The sale core did not answer (${(error as Error).message}); try again shortly.`);
    }
    const json = (await res.json().catch(() => ({}))) as T;
    return { status: res.status, json };
  }

  /**
   * Whether this sale core's create-sale schema knows `follow_up_sale_id` (read once from its OpenAPI
   * document): a sale core that does not would refuse the unknown field, so it is only sent when known.
   */
  supportsFollowUp(): Promise<boolean> {
    this.followUpField ??= this.call<{ paths?: Record<string, Record<string, unknown>> }>('GET', '/openapi.json')
      .then(({ json }) => JSON.stringify(json.paths?.['/admin/sales']?.post ?? {}).includes('"follow_up_sale_id"'))
      .catch(() => {
        this.followUpField = undefined;
        return false;
      });
    return this.followUpField;
  }

  async createSale(def: SaleDefinition): Promise<void> {
    const { status, json } = await this.call<{ error?: { code: string; message: string } }>('POST', '/admin/sales', def);
    if (status === 201) return;
    if (status >= 500) throw dashboardError('SALE_CORE_UNAVAILABLE');
    throw dashboardError(
      'SALE_CORE_REFUSED',
      `The sale core refused sale ${def.id}: ${json.error?.message ?? status} (${json.error?.code ?? status})`,
    );
  }

  async endSale(saleId: string): Promise<void> {
    const { status, json } = await this.call<{ error?: { code: string; message: string } }>(
      'POST',
      `/admin/sales/${encodeURIComponent(saleId)}/end`,
      {},
    );
    if (status === 200) return;
    if (status === 404) throw dashboardError('SALE_NOT_FOUND');
    if (status >= 500) throw dashboardError('SALE_CORE_UNAVAILABLE');
    throw dashboardError('SALE_CORE_REFUSED', `The sale core refused to end ${saleId}: ${json.error?.message ?? status}`);
  }

  /** The sale with its live stock ledger, or null when the sale core does not know it. */
  async readSale(saleId: string): Promise<AdminSale | null> {
    const { status, json } = await this.call<AdminSale>('GET', `/admin/sales/${encodeURIComponent(saleId)}`);
    if (status === 200) return json;
    if (status === 404) return null;
    throw dashboardError('SALE_CORE_UNAVAILABLE');
  }
}
