import { config } from '@vue/test-utils'
import PrimeVue from 'primevue/config'
import ToastService from 'primevue/toastservice'
import { cleanup } from '@testing-library/vue'
import { afterEach, vi } from 'vitest'

config.global.plugins = [[PrimeVue, { unstyled: true }], ToastService]
config.global.stubs = { RouterLink: true }

afterEach(() => {
  cleanup()
  localStorage.clear()
  vi.restoreAllMocks()
})

// jsdom has no matchMedia; PrimeVue's overlays ask it about orientation.
if (!window.matchMedia) {
  window.matchMedia = ((query: string) => ({
    matches: false,
    media: query,
    onchange: null,
    addListener: () => {},
    removeListener: () => {},
    addEventListener: () => {},
    removeEventListener: () => {},
    dispatchEvent: () => false,
  })) as unknown as typeof window.matchMedia
}
